// A small metrics registry for the agent's Prometheus endpoint: counters, gauges and histograms
// with fixed buckets, each a family of series told apart by their labels, rendered in the
// Prometheus text format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/).
// Safe from every thread; the handles stay valid as long as the registry.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace solver::agent {

// Label names and values, in the order they are written.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class Metrics {
  struct Series {
    double value = 0.0;                      // counter or gauge
    std::vector<std::uint64_t> bucket_hits;  // histogram: observations per bucket (not cumulative)
    double sum = 0.0;
    std::uint64_t count = 0;
  };

 public:
  class Counter {
   public:
    void add(double amount = 1.0);  // amount >= 0
    double value() const;

   private:
    friend class Metrics;
    Counter(Metrics* owner, Series* series) : owner_(owner), series_(series) {}
    Metrics* owner_;
    Series* series_;
  };

  class Gauge {
   public:
    void set(double value);
    double value() const;

   private:
    friend class Metrics;
    Gauge(Metrics* owner, Series* series) : owner_(owner), series_(series) {}
    Metrics* owner_;
    Series* series_;
  };

  class Histogram {
   public:
    void observe(double value);
    std::uint64_t count() const;

   private:
    friend class Metrics;
    Histogram(Metrics* owner, Series* series, const std::vector<double>* bounds)
        : owner_(owner), series_(series), bounds_(bounds) {}
    Metrics* owner_;
    Series* series_;
    const std::vector<double>* bounds_;
  };

  Metrics() = default;
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // The series of family `name` with `labels`, created at 0 the first time it is asked for (so
  // it is exposed before anything happened). A name is one type with one help text: asking for
  // it as another type throws Error(Internal). Names and label names are checked against
  // Prometheus's grammar; a histogram's bounds are increasing (+Inf is implied).
  Counter counter(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Gauge gauge(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Histogram histogram(const std::string& name, const std::string& help, const std::vector<double>& bounds,
                      const MetricLabels& labels = {});
  // Drops every series of gauge family `name` (a GPU that went away, a slot that holds no lease).
  void clear_gauges(const std::string& name);

  // Called, outside the registry's lock, before each exposition: to set gauges read at scrape
  // time (GPU temperatures, seconds left on a lease).
  void add_collector(std::function<void(Metrics&)> collect);

  // Runs the collectors, then renders every family, sorted by name, in text format 0.0.4.
  std::string exposition();

 private:
  enum class Type { Counter, Gauge, Histogram };
  struct Family {
    Type type;
    std::string help;
    std::vector<double> bounds;            // histograms only
    std::map<MetricLabels, Series> series;  // std::map: a series never moves once made
  };
  Series& series(const std::string& name, Type type, const std::string& help, const MetricLabels& labels,
                 const std::vector<double>& bounds, Family** family);

  mutable std::mutex mutex_;
  std::map<std::string, Family> families_;
  std::mutex collectors_mutex_;
  std::vector<std::function<void(Metrics&)>> collectors_;
};

// A metric's value as the text format writes it: "+Inf", "-Inf", "NaN", else the shortest exact decimal.
std::string metric_value_text(double value);

}  // namespace solver::agent
