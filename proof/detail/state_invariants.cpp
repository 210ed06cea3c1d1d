// The bounds of state_invariants.h, element by element in double. Each bound carries a slack
// for float32 rounding: the moments are updated in float32 with beta rounded to float32, so an
// honest state may overshoot an exact bound by a few ulps per step, and the step-1 bounds are
// tight (a constant gradient meets them with equality).
#include "proof/detail/state_invariants.h"

#include <fmt/format.h>

#include <cmath>
#include <map>
#include <optional>
#include <span>

#include "common/error.h"

namespace solver::proof::detail {
namespace {

constexpr double kSlack = 1e-3;           // relative, on bounds that rounding can meet exactly
constexpr double kRounding = 0x1p-22;     // per step, relative: two float32 roundings
constexpr double kTiny = 1e-30;           // absolute, for bounds at zero

// sum_{j<n} x^j, the geometric sum behind every bound below.
double geometric_sum(double x, std::int64_t n) {
  if (x == 1.0) return static_cast<double>(n);
  return (1.0 - std::pow(x, static_cast<double>(n))) / (1.0 - x);
}

// The first element that breaks each rule, and how many do; reported once per rule.
class Findings {
 public:
  explicit Findings(std::int64_t step) : step_(step) {}

  void report(std::vector<std::string>& failures) const {
    for (const auto& [rule, finding] : first_)
      failures.push_back(fmt::format("invariant at step {}: {}: {}{}", step_, rule, finding.text,
                                     finding.count > 1 ? fmt::format(" (and {} more)", finding.count - 1) : ""));
  }

  void add(const std::string& rule, const std::string& text) {
    Finding& finding = first_[rule];
    if (finding.count++ == 0) finding.text = text;
  }

 private:
  struct Finding {
    std::string text;
    std::int64_t count = 0;
  };
  std::int64_t step_;
  std::map<std::string, Finding> first_;
};

std::optional<std::span<const float>> floats(const checkpoint::Checkpoint& state, const std::string& name) {
  const checkpoint::Tensor* tensor = state.find(name);
  if (tensor == nullptr || tensor->dtype != checkpoint::DType::F32) return std::nullopt;
  return tensor->as_f32();
}

std::int64_t counter(const checkpoint::Checkpoint& state, const std::string& key) {
  const auto found = state.metadata.find(key);
  if (found == state.metadata.end()) return -1;
  try {
    std::size_t used = 0;
    const long long value = std::stoll(found->second, &used);
    return used == found->second.size() ? value : -1;
  } catch (const std::exception&) {
    return -1;
  }
}

void check_counters(std::int64_t step, const checkpoint::Checkpoint& state, Findings& findings) {
  for (const char* key : {"step", "optimizer_step"})
    if (counter(state, key) != step)
      findings.add("step counters", fmt::format("metadata {} is \"{}\", expected {}", key,
                                                state.metadata.contains(key) ? state.metadata.at(key) : "", step));
}

void check_finite(const checkpoint::Checkpoint& state, Findings& findings) {
  for (const checkpoint::Tensor& tensor : state.tensors) {
    if (tensor.dtype != checkpoint::DType::F32) continue;
    const std::span<const float> values = tensor.as_f32();
    for (std::size_t i = 0; i < values.size(); ++i)
      if (!std::isfinite(values[i])) findings.add("finite values", fmt::format("{}[{}] is {}", tensor.name, i, values[i]));
  }
}

// Adam and AdamW: m (exp_avg) and v (exp_avg_sq) after t updates with directions d_1..d_t are
//   m_t = (1 - b1) sum_s b1^(t-s) d_s,   v_t = (1 - b2) sum_s b2^(t-s) d_s^2.
void check_adam(const Task& task, std::int64_t step, const checkpoint::Checkpoint& state,
                const checkpoint::Checkpoint* previous, std::int64_t previous_step, Findings& findings) {
  const OptimizerSpec& adam = task.training.optimizer;
  const double b1 = adam.beta1, b2 = adam.beta2;
  const double cauchy_schwarz = (1.0 - b1) * (1.0 - b1) / (1.0 - b2);
  const double ratio = b1 * b1 / b2;
  const double clip = task.training.grad_clip_norm;
  // With L2 weight decay (adam), d = g + wd * p is not bounded by the clip.
  const bool clipped = clip > 0.0 && (adam.kind == OptimizerKind::AdamW || adam.weight_decay == 0.0);
  const double m_limit = clip * (1.0 - std::pow(b1, static_cast<double>(step)));
  const double v_limit = clip * clip * (1.0 - std::pow(b2, static_cast<double>(step)));
  const double k_total = cauchy_schwarz * geometric_sum(ratio, step);
  const std::int64_t k = step - previous_step;
  const double b1k = std::pow(b1, static_cast<double>(k)), b2k = std::pow(b2, static_cast<double>(k));
  const double k_window = cauchy_schwarz * geometric_sum(ratio, k);
  const double window_rounding = static_cast<double>(k + 2) * kRounding;
  // Built-in models give every parameter a gradient at every step; a TorchScript module may
  // leave one without, and its moments then skip steps, which the window bound cannot allow.
  const bool every_step_updates = task.model.kind != ModelKind::TorchScript;

  for (const checkpoint::Tensor& parameter : state.tensors) {
    if (parameter.dtype != checkpoint::DType::F32 || !parameter.name.starts_with("param.")) continue;
    const std::string slot = "optim." + parameter.name.substr(6);
    const auto m = floats(state, slot + ".exp_avg");
    const auto v = floats(state, slot + ".exp_avg_sq");
    if (!m || !v) continue;  // the layout check reports a missing slot
    const std::string m_name = slot + ".exp_avg", v_name = slot + ".exp_avg_sq";
    // Each bound as a test of one element, so that a branch-free pass over every element (which
    // the compiler vectorizes) can tell whether any is broken; only then are they named.
    const auto negative = [](double vi) { return !(vi >= 0.0); };
    // Cauchy-Schwarz on m_t: m^2 <= (1-b1)^2/(1-b2) * sum_j (b1^2/b2)^j * v.
    const auto beyond_second = [&](double mi, double vi) { return mi * mi > k_total * vi * (1.0 + kSlack) + kTiny; };
    // Clipped directions have |d| <= C, so |m| <= C (1 - b1^t) and v <= C^2 (1 - b2^t).
    const auto m_beyond_clip = [&](double mi) { return clipped && std::abs(mi) > m_limit * (1.0 + kSlack) + kTiny; };
    const auto v_beyond_clip = [&](double vi) { return clipped && vi > v_limit * (1.0 + kSlack) + kTiny; };
    bool broken = false;
    for (std::size_t i = 0; i < m->size(); ++i) {
      const double mi = (*m)[i], vi = (*v)[i];
      broken |= negative(vi) | beyond_second(mi, vi) | m_beyond_clip(mi) | v_beyond_clip(vi);
    }
    for (std::size_t i = 0; broken && i < m->size(); ++i) {
      const double mi = (*m)[i], vi = (*v)[i];
      if (negative(vi)) findings.add("second moment >= 0", fmt::format("{}[{}] is {}", v_name, i, vi));
      if (beyond_second(mi, vi))
        findings.add("first moment within the second (Cauchy-Schwarz)",
                     fmt::format("{}[{}] = {} but {}[{}] = {} allows |m| <= {}", m_name, i, mi, v_name, i, vi,
                                 std::sqrt(k_total * vi)));
      if (m_beyond_clip(mi))
        findings.add("first moment within the clip", fmt::format("|{}[{}]| = {} > C (1 - beta1^t) = {}", m_name, i,
                                                                 std::abs(mi), m_limit));
      if (v_beyond_clip(vi))
        findings.add("second moment within the clip", fmt::format("{}[{}] = {} > C^2 (1 - beta2^t) = {}", v_name, i, vi,
                                                                  v_limit));
    }
    if (previous == nullptr) continue;
    const auto m0 = floats(*previous, m_name);
    const auto v0 = floats(*previous, v_name);
    const auto p0 = floats(*previous, parameter.name);
    if (!m0 || !v0 || !p0) continue;
    const std::span<const float> p = parameter.as_f32();
    // v only ever gains non-negative terms: v_t >= b2^k v_s.
    const auto decays_too_fast = [&](double vi, double v0i) {
      return vi < b2k * v0i * (1.0 - window_rounding) - kTiny;
    };
    // The window's own terms obey Cauchy-Schwarz too:
    // (m_t - b1^k m_s)^2 <= (1-b1)^2/(1-b2) * sum_{j<k} (b1^2/b2)^j * (v_t - b2^k v_s).
    const auto window_beyond_second = [&](double mi, double vi, double m0i, double v0i) {
      const double decayed = b2k * v0i;
      const double m_gain = std::max(0.0, std::abs(mi - b1k * m0i) - window_rounding * (std::abs(mi) + b1k * std::abs(m0i)));
      const double v_gain = vi - decayed + window_rounding * (vi + decayed);
      return every_step_updates && m_gain * m_gain > k_window * std::max(0.0, v_gain) * (1.0 + kSlack) + kTiny;
    };
    bool slots_moved = false, slots_zero = true, parameter_moved = false;
    broken = false;
    for (std::size_t i = 0; i < m->size(); ++i) {
      const double mi = (*m)[i], vi = (*v)[i], m0i = (*m0)[i], v0i = (*v0)[i];
      slots_moved |= (mi != m0i) | (vi != v0i);
      slots_zero &= (mi == 0.0) & (vi == 0.0);
      parameter_moved |= p[i] != (*p0)[i];
      broken |= decays_too_fast(vi, v0i) | window_beyond_second(mi, vi, m0i, v0i);
    }
    for (std::size_t i = 0; broken && i < m->size(); ++i) {
      const double mi = (*m)[i], vi = (*v)[i], m0i = (*m0)[i], v0i = (*v0)[i];
      if (decays_too_fast(vi, v0i))
        findings.add("second moment decays no faster than beta2",
                     fmt::format("{}[{}] fell from {} at step {} to {}, below beta2^{} times it ({})", v_name, i, v0i,
                                 previous_step, vi, k, b2k * v0i));
      if (window_beyond_second(mi, vi, m0i, v0i))
        findings.add("first moment's change within the second's (Cauchy-Schwarz over the steps since the last checkpoint)",
                     fmt::format("{}[{}] went from {} to {} while {}[{}] went from {} to {}", m_name, i, m0i, mi, v_name, i,
                                 v0i, vi));
    }
    // The update moves a parameter only together with its moments (unless both stay at zero).
    if (parameter_moved && !slots_moved && !slots_zero)
      findings.add("a parameter moves only with its optimizer state",
                   fmt::format("{} changed since step {}, but its moments did not", parameter.name, previous_step));
  }
}

// SGD with momentum mu: buf_t = mu buf_(t-1) + d_t, so clipped directions give
// |buf_t| <= C (1 - mu^t) / (1 - mu), and over a window |buf_t - mu^k buf_s| <= C (1 - mu^k) / (1 - mu).
void check_sgd_momentum(const Task& task, std::int64_t step, const checkpoint::Checkpoint& state,
                        const checkpoint::Checkpoint* previous, std::int64_t previous_step, Findings& findings) {
  const OptimizerSpec& sgd = task.training.optimizer;
  const double mu = sgd.momentum, clip = task.training.grad_clip_norm;
  const bool clipped = clip > 0.0 && sgd.weight_decay == 0.0;
  const double limit = clip * geometric_sum(mu, step);
  const std::int64_t k = step - previous_step;
  const double muk = std::pow(mu, static_cast<double>(k));
  const double window_limit = clip * geometric_sum(mu, k);
  for (const checkpoint::Tensor& parameter : state.tensors) {
    if (parameter.dtype != checkpoint::DType::F32 || !parameter.name.starts_with("param.")) continue;
    const std::string name = "optim." + parameter.name.substr(6) + ".momentum_buffer";
    const auto buffer = floats(state, name);
    if (!buffer) continue;
    const auto before = previous != nullptr ? floats(*previous, name) : std::nullopt;
    const auto p0 = previous != nullptr ? floats(*previous, parameter.name) : std::nullopt;
    const std::span<const float> p = parameter.as_f32();
    bool moved = false, buffer_moved = false, buffer_zero = true;
    for (std::size_t i = 0; i < buffer->size(); ++i) {
      const double b = (*buffer)[i];
      buffer_zero = buffer_zero && b == 0.0;
      if (clipped && std::abs(b) > limit * (1.0 + kSlack) + kTiny)
        findings.add("momentum within the clip", fmt::format("|{}[{}]| = {} > C (1 - mu^t) / (1 - mu) = {}", name, i,
                                                             std::abs(b), limit));
      if (!before || !p0) continue;
      const double b0 = (*before)[i];
      buffer_moved = buffer_moved || b != b0;
      moved = moved || p[i] != (*p0)[i];
      if (clipped && std::abs(b - muk * b0) > window_limit * (1.0 + kSlack) + kTiny)
        findings.add("momentum's change within the clip",
                     fmt::format("{}[{}] went from {} to {}; clipped gradients allow a change of at most {}", name, i, b0, b,
                                 window_limit));
    }
    if (moved && !buffer_moved && !buffer_zero)
      findings.add("a parameter moves only with its optimizer state",
                   fmt::format("{} changed since step {}, but its momentum did not", parameter.name, previous_step));
  }
}

}  // namespace

void check_state_invariants(const Task& task, std::int64_t step, const checkpoint::Checkpoint& state,
                            const checkpoint::Checkpoint* previous, std::int64_t previous_step,
                            std::vector<std::string>& failures) {
  Findings findings(step);
  check_counters(step, state, findings);
  check_finite(state, findings);
  const OptimizerKind kind = task.training.optimizer.kind;
  if (kind == OptimizerKind::Adam || kind == OptimizerKind::AdamW)
    check_adam(task, step, state, previous, previous_step, findings);
  else if (kind == OptimizerKind::Sgd && task.training.optimizer.momentum != 0.0)
    check_sgd_momentum(task, step, state, previous, previous_step, findings);
  findings.report(failures);
}

}  // namespace solver::proof::detail
