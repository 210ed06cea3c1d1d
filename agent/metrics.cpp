#include "agent/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace solver::agent {
namespace {

bool valid_name(const std::string& name, bool colon_allowed) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  return std::all_of(name.begin(), name.end(), [&](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || (colon_allowed && c == ':');
  });
}

// Label values escape backslash, double quote and newline; help texts backslash and newline.
std::string escaped(const std::string& text, bool quotes) {
  std::string out;
  for (const char c : text) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (quotes && c == '"') out += "\\\"";
    else out += c;
  }
  return out;
}

std::string label_text(const MetricLabels& labels, const std::string& extra_name = "", const std::string& extra_value = "") {
  std::vector<std::string> parts;
  for (const auto& [name, value] : labels) parts.push_back(fmt::format("{}=\"{}\"", name, escaped(value, true)));
  if (!extra_name.empty()) parts.push_back(fmt::format("{}=\"{}\"", extra_name, extra_value));
  return parts.empty() ? "" : "{" + fmt::format("{}", fmt::join(parts, ",")) + "}";
}

}  // namespace

std::string metric_value_text(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);
}

void Metrics::Counter::add(double amount) {
  const std::lock_guard lock(owner_->mutex_);
  if (amount > 0) series_->value += amount;
}

double Metrics::Counter::value() const {
  const std::lock_guard lock(owner_->mutex_);
  return series_->value;
}

void Metrics::Gauge::set(double value) {
  const std::lock_guard lock(owner_->mutex_);
  series_->value = value;
}

double Metrics::Gauge::value() const {
  const std::lock_guard lock(owner_->mutex_);
  return series_->value;
}

void Metrics::Histogram::observe(double value) {
  const std::size_t bucket =
      static_cast<std::size_t>(std::lower_bound(bounds_->begin(), bounds_->end(), value) - bounds_->begin());
  const std::lock_guard lock(owner_->mutex_);
  ++series_->bucket_hits[bucket];  // bucket == bounds.size(): only +Inf holds it
  series_->sum += value;
  ++series_->count;
}

std::uint64_t Metrics::Histogram::count() const {
  const std::lock_guard lock(owner_->mutex_);
  return series_->count;
}

Metrics::Series& Metrics::series(const std::string& name, Type type, const std::string& help, const MetricLabels& labels,
                                 const std::vector<double>& bounds, Family** family) {
  if (!valid_name(name, true)) throw Error(ErrorKind::Internal, "metric name '" + name + "' is not a Prometheus name");
  for (const auto& [label, value] : labels)
    if (!valid_name(label, false) || label.starts_with("__") || label == "le")
      throw Error(ErrorKind::Internal, "metric " + name + ": label name '" + label + "' is not allowed");
  if (!std::is_sorted(bounds.begin(), bounds.end()) || std::adjacent_find(bounds.begin(), bounds.end()) != bounds.end())
    throw Error(ErrorKind::Internal, "metric " + name + ": histogram bounds must increase");
  auto [found, made] = families_.try_emplace(name, Family{type, help, bounds, {}});
  if (!made && (found->second.type != type || found->second.bounds != bounds))
    throw Error(ErrorKind::Internal, "metric " + name + " is already registered as another type or with other buckets");
  *family = &found->second;
  auto [entry, fresh] = found->second.series.try_emplace(labels);
  if (fresh && type == Type::Histogram) entry->second.bucket_hits.assign(bounds.size() + 1, 0);
  return entry->second;
}

Metrics::Counter Metrics::counter(const std::string& name, const std::string& help, const MetricLabels& labels) {
  const std::lock_guard lock(mutex_);
  Family* family = nullptr;
  return Counter(this, &series(name, Type::Counter, help, labels, {}, &family));
}

Metrics::Gauge Metrics::gauge(const std::string& name, const std::string& help, const MetricLabels& labels) {
  const std::lock_guard lock(mutex_);
  Family* family = nullptr;
  return Gauge(this, &series(name, Type::Gauge, help, labels, {}, &family));
}

Metrics::Histogram Metrics::histogram(const std::string& name, const std::string& help, const std::vector<double>& bounds,
                                      const MetricLabels& labels) {
  const std::lock_guard lock(mutex_);
  Family* family = nullptr;
  Series& made = series(name, Type::Histogram, help, labels, bounds, &family);
  return Histogram(this, &made, &family->bounds);
}

void Metrics::clear_gauges(const std::string& name) {
  const std::lock_guard lock(mutex_);
  if (const auto found = families_.find(name); found != families_.end() && found->second.type == Type::Gauge)
    found->second.series.clear();
}

void Metrics::add_collector(std::function<void(Metrics&)> collect) {
  const std::lock_guard lock(collectors_mutex_);
  collectors_.push_back(std::move(collect));
}

std::string Metrics::exposition() {
  {
    const std::lock_guard lock(collectors_mutex_);  // also keeps two scrapes from collecting at once
    for (const auto& collect : collectors_) collect(*this);
  }
  const std::lock_guard lock(mutex_);
  std::string text;
  for (const auto& [name, family] : families_) {
    if (family.series.empty()) continue;
    const char* type = family.type == Type::Counter ? "counter" : family.type == Type::Gauge ? "gauge" : "histogram";
    text += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escaped(family.help, false), name, type);
    for (const auto& [labels, series] : family.series) {
      if (family.type != Type::Histogram) {
        text += fmt::format("{}{} {}\n", name, label_text(labels), metric_value_text(series.value));
        continue;
      }
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i < family.bounds.size(); ++i) {
        cumulative += series.bucket_hits[i];
        text += fmt::format("{}_bucket{} {}\n", name, label_text(labels, "le", metric_value_text(family.bounds[i])),
                            cumulative);
      }
      text += fmt::format("{}_bucket{} {}\n", name, label_text(labels, "le", "+Inf"), series.count);
      text += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, label_text(labels), metric_value_text(series.sum), name,
                          label_text(labels), series.count);
    }
  }
  return text;
}

}  // namespace solver::agent
