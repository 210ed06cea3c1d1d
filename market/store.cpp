// The market's SQLite store and rules (see store.h and docs/market-protocol.md).
// Lease states: active -> completed | failed | released | cancelled | expired; an expired lease comes back
// to active when its holder reports before anyone else claimed the task ("revived"), since the
// work it did is still good and redoing it helps nobody.
#include "market/store.h"

#include <fmt/format.h>
#include <sqlite3.h>

#include <algorithm>
#include <iterator>
#include <mutex>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "common/task.h"

namespace solver::market {
namespace {

using nlohmann::json;

constexpr int kSchemaVersion = 2;

constexpr const char* kSchema = R"sql(
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE nonces (
  key TEXT NOT NULL, nonce TEXT NOT NULL, timestamp INTEGER NOT NULL,
  PRIMARY KEY (key, nonce)) WITHOUT ROWID;
CREATE INDEX nonces_by_time ON nonces (timestamp);
CREATE TABLE workers (
  key TEXT PRIMARY KEY, profile TEXT NOT NULL, registered_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE tasks (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  submitter TEXT NOT NULL,
  task TEXT NOT NULL,
  task_sha256 TEXT NOT NULL,
  model_kind TEXT NOT NULL,
  max_memory_mb INTEGER NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  solver TEXT,
  last_lease TEXT,
  progress_step INTEGER, progress_total INTEGER, progress_loss REAL, progress_updated_at INTEGER,
  completion_lease TEXT, bundle_address TEXT, manifest_sha256 TEXT, manifest_signature TEXT, completed_at INTEGER,
  failure_reason TEXT,
  submitted_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL);
CREATE INDEX tasks_by_state ON tasks (state, seq);
CREATE INDEX tasks_by_submitter ON tasks (submitter);
CREATE TABLE leases (
  lease_id TEXT PRIMARY KEY, task_id TEXT NOT NULL, worker TEXT NOT NULL, state TEXT NOT NULL,
  claimed_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, ended_at INTEGER);
CREATE INDEX leases_by_state ON leases (state, expires_at);
CREATE TABLE commitments (
  lease_id TEXT NOT NULL, task_id TEXT NOT NULL, step INTEGER NOT NULL, sha256 TEXT NOT NULL, received_at INTEGER NOT NULL,
  PRIMARY KEY (lease_id, step));
CREATE INDEX commitments_by_task ON commitments (task_id);
CREATE TABLE verification_jobs (
  job_id TEXT PRIMARY KEY, task_id TEXT NOT NULL, verifier TEXT NOT NULL, state TEXT NOT NULL,
  claimed_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  accepted INTEGER, reason TEXT, report TEXT, decided_at INTEGER);
CREATE INDEX jobs_by_task ON verification_jobs (task_id, state);
)sql";

// kMigrations[v - 2] takes a database from version v - 1 to v. A new database is created at
// version 1 (kSchema) and migrated like any other, so there is one path to the current schema.
constexpr const char* kMigrations[] = {
    // 2: failures are attributed (docs/market-protocol.md, "Failures"): a task is never leased
    // again to a worker that failed it, and a worker whose failures are not its tasks' fault is
    // held back for a growing time.
    R"sql(
CREATE TABLE exclusions (task_id TEXT NOT NULL, worker TEXT NOT NULL, PRIMARY KEY (task_id, worker)) WITHOUT ROWID;
ALTER TABLE workers ADD COLUMN faults_in_a_row INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN held_until INTEGER NOT NULL DEFAULT 0;
)sql",
};
static_assert(std::size(kMigrations) == kSchemaVersion - 1, "one migration per schema version after the first");

// How long a worker is held back after its n-th failure in a row that was not the task's fault:
// none after the first (anyone can be unlucky once), then doubling from `base`, at most 6 hours.
std::int64_t hold_seconds(std::int64_t faults_in_a_row, std::int64_t base) {
  constexpr std::int64_t kMaxHold = 6 * 3600;
  if (faults_in_a_row < 2 || base <= 0) return 0;
  std::int64_t hold = std::min(base, kMaxHold);
  for (std::int64_t doubling = 2; doubling < faults_in_a_row && hold < kMaxHold; ++doubling) hold = std::min(2 * hold, kMaxHold);
  return hold;
}

// A task that will not be leased again needs no record of whom not to lease it to.
constexpr const char* kForgetExclusions = "DELETE FROM exclusions WHERE task_id = ?";

// A failure reason is the worker's words: kept, but not without bound.
constexpr std::size_t kMaxReasonBytes = 2000;

// One prepared statement; binds and reads by 1-based parameter and 0-based column index.
class Statement {
 public:
  Statement(sqlite3* db, const std::filesystem::path& path, std::string_view sql) : db_(db), path_(&path) {
    if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &statement_, nullptr) != SQLITE_OK)
      fail("preparing \"" + std::string(sql.substr(0, 60)) + "\"");
  }
  Statement(Statement&& other) noexcept : db_(other.db_), path_(other.path_), statement_(other.statement_) { other.statement_ = nullptr; }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  Statement& operator=(Statement&&) = delete;
  ~Statement() { sqlite3_finalize(statement_); }

  void bind(int index, std::string_view text) {
    check(sqlite3_bind_text(statement_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT));
  }
  void bind(int index, std::int64_t value) { check(sqlite3_bind_int64(statement_, index, value)); }
  void bind(int index, int value) { bind(index, static_cast<std::int64_t>(value)); }
  void bind(int index, double value) { check(sqlite3_bind_double(statement_, index, value)); }
  void bind(int index, std::nullptr_t) { check(sqlite3_bind_null(statement_, index)); }
  template <typename T>
  void bind(int index, const std::optional<T>& value) {
    if (value) bind(index, *value);
    else bind(index, nullptr);
  }

  // True when a row is ready; false when the statement is done.
  bool next() {
    const int status = sqlite3_step(statement_);
    if (status == SQLITE_ROW) return true;
    if (status == SQLITE_DONE) return false;
    fail("running \"" + std::string(sqlite3_sql(statement_)).substr(0, 60) + "\"");
  }

  bool is_null(int column) const { return sqlite3_column_type(statement_, column) == SQLITE_NULL; }
  std::int64_t integer(int column) const { return sqlite3_column_int64(statement_, column); }
  double real(int column) const { return sqlite3_column_double(statement_, column); }
  std::string text(int column) const {
    const auto* bytes = reinterpret_cast<const char*>(sqlite3_column_text(statement_, column));
    return bytes ? std::string(bytes, static_cast<std::size_t>(sqlite3_column_bytes(statement_, column))) : std::string();
  }
  std::optional<std::string> optional_text(int column) const {
    return is_null(column) ? std::nullopt : std::optional<std::string>(text(column));
  }

 private:
  void check(int status) {
    if (status != SQLITE_OK) fail("binding a parameter");
  }
  [[noreturn]] void fail(const std::string& doing) const {
    throw Error(ErrorKind::Io, "market database " + path_->string() + ": " + doing + ": " + sqlite3_errmsg(db_));
  }

  sqlite3* db_;
  const std::filesystem::path* path_;
  sqlite3_stmt* statement_ = nullptr;
};

struct TaskRow {
  std::string task_id, name, submitter, task, task_sha256, state;
  std::int64_t attempts = 0;
  std::optional<std::string> solver, last_lease, completion_lease;
};

struct LeaseRow {
  std::string lease_id, task_id, worker, state;
  std::int64_t expires_at = 0;
};

struct JobRow {
  std::string job_id, task_id, verifier, state;
  bool accepted = false;
  std::string reason, report;
};

std::string short_key(const std::string& key) { return key.substr(0, 12); }

// The progress columns (step, total, loss, updated_at from column `first` on) as JSON; null before any heartbeat.
json progress_json(const Statement& row, int first) {
  if (row.is_null(first + 3)) return nullptr;
  json progress = {{"step", row.integer(first)}, {"total_steps", row.integer(first + 1)}, {"loss", nullptr}, {"updated_at", row.integer(first + 3)}};
  if (!row.is_null(first + 2)) progress["loss"] = row.real(first + 2);
  return progress;
}

}  // namespace

struct Store::Impl {
  std::filesystem::path path;
  StorePolicy policy;
  sqlite3* db = nullptr;
  std::mutex mutex;

  [[noreturn]] void fail(const std::string& doing) const {
    throw Error(ErrorKind::Io, "market database " + path.string() + ": " + doing + ": " + (db ? sqlite3_errmsg(db) : "out of memory"));
  }

  void exec(const char* sql) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) fail(std::string("running ") + std::string(sql).substr(0, 40));
  }

  template <typename... Values>
  Statement query(std::string_view sql, const Values&... values) {
    Statement statement(db, path, sql);
    int index = 1;
    (statement.bind(index++, values), ...);
    return statement;
  }

  template <typename... Values>
  int run(std::string_view sql, const Values&... values) {
    Statement statement = query(sql, values...);
    while (statement.next()) {
    }
    return sqlite3_changes(db);
  }

  // BEGIN IMMEDIATE takes the write lock at once, so a read-then-write never meets a busy database halfway.
  class Transaction {
   public:
    explicit Transaction(Impl& impl) : impl_(impl) { impl_.exec("BEGIN IMMEDIATE"); }
    ~Transaction() {
      if (!committed_) sqlite3_exec(impl_.db, "ROLLBACK", nullptr, nullptr, nullptr);
    }
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    void commit() {
      impl_.exec("COMMIT");
      committed_ = true;
    }

   private:
    Impl& impl_;
    bool committed_ = false;
  };

  void open() {
    if (path.has_parent_path()) {
      std::error_code error;
      std::filesystem::create_directories(path.parent_path(), error);
    }
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK)
      fail("opening");
    sqlite3_busy_timeout(db, 5000);
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");

    Transaction transaction(*this);
    if (!query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").next()) {
      exec(kSchema);
      run("INSERT INTO schema_version (version) VALUES (1)");
    }
    std::int64_t version = 0;
    {
      Statement row = query("SELECT version FROM schema_version");
      if (row.next() && !row.is_null(0)) version = row.integer(0);
    }
    if (version < 1 || version > kSchemaVersion)
      throw Error(ErrorKind::Config, "market database " + path.string() + " has schema version " + std::to_string(version) +
                                         "; this market reads versions 1 to " + std::to_string(kSchemaVersion));
    for (; version < kSchemaVersion; ++version) {
      exec(kMigrations[version - 1]);
      run("UPDATE schema_version SET version = ?", version + 1);
    }
    transaction.commit();
  }

  std::optional<TaskRow> find_task(const std::string& task_id) {
    Statement row = query(
        "SELECT task_id, name, submitter, task, task_sha256, state, attempts, solver, last_lease, completion_lease "
        "FROM tasks WHERE task_id = ?",
        task_id);
    if (!row.next()) return std::nullopt;
    return TaskRow{row.text(0), row.text(1), row.text(2), row.text(3), row.text(4), row.text(5),
                   row.integer(6), row.optional_text(7), row.optional_text(8), row.optional_text(9)};
  }

  TaskRow task_or_refuse(const std::string& task_id) {
    std::optional<TaskRow> task = find_task(task_id);
    if (!task) throw Refusal(404, "task_not_found", "no task with id \"" + task_id + "\"");
    return *task;
  }

  // The lease, after checking it belongs to this task and to this key.
  LeaseRow owned_lease(const TaskRow& task, const std::string& lease_id, const std::string& key) {
    Statement row = query("SELECT lease_id, task_id, worker, state, expires_at FROM leases WHERE lease_id = ?", lease_id);
    if (!row.next() || row.text(1) != task.task_id)
      throw Refusal(409, "lease_lost", "lease \"" + lease_id + "\" is not a lease of task " + task.task_id);
    LeaseRow lease{row.text(0), row.text(1), row.text(2), row.text(3), row.integer(4)};
    if (lease.worker != key)
      throw Refusal(409, "lease_not_yours", "lease " + lease_id + " of task " + task.task_id + " belongs to worker " +
                                                short_key(lease.worker) + "…, not to " + short_key(key) + "…");
    return lease;
  }

  // An expired lease comes back to life when nobody claimed the task since; otherwise it is lost.
  void revive_or_refuse(TaskRow& task, LeaseRow& lease, std::int64_t now) {
    if (task.state != "queued" || task.last_lease != lease.lease_id)
      throw Refusal(409, "lease_expired", "lease " + lease.lease_id + " of task " + task.task_id + " expired at " +
                                              std::to_string(lease.expires_at) + " and the task is now " +
                                              (task.state == "leased" ? std::string("leased to another worker") : task.state));
    run("UPDATE leases SET state = 'active', ended_at = NULL, expires_at = ? WHERE lease_id = ?", now + policy.lease_seconds, lease.lease_id);
    run("UPDATE tasks SET state = 'leased', attempts = attempts - 1, updated_at = ? WHERE task_id = ?", now, task.task_id);
    log_info("market", "lease {} of task {} revived: its holder reported after expiry and nobody had claimed the task", lease.lease_id, task.task_id);
    task.state = "leased";
    --task.attempts;
    lease.state = "active";
  }

  // Makes sure the lease can act now: active, or expired and revivable.
  void require_active(TaskRow& task, LeaseRow& lease, std::int64_t now) {
    if (lease.state == "active") return;
    if (lease.state == "expired") return revive_or_refuse(task, lease, now);
    if (lease.state == "cancelled")
      throw Refusal(409, "task_cancelled", "task " + task.task_id + " was cancelled by its submitter; lease " + lease.lease_id + " has ended");
    throw Refusal(409, "lease_lost", "lease " + lease.lease_id + " of task " + task.task_id + " has ended (" + lease.state + ")");
  }

  // Ends a lease without a completion: the task goes back to the queue, or fails after
  // max_attempts. An attempt lost to its worker's own fault is not counted. Returns the task's
  // new state: "queued" or "failed".
  std::string end_attempt(const TaskRow& task, const std::string& lease_id, const std::string& lease_state, bool requeue,
                          bool counts, const std::string& reason, std::int64_t now) {
    run("UPDATE leases SET state = ?, ended_at = ? WHERE lease_id = ?", lease_state, now, lease_id);
    const std::int64_t attempts = task.attempts + (counts ? 1 : 0);
    const bool fails = !requeue || attempts >= policy.max_attempts;
    run("UPDATE tasks SET state = ?, attempts = ?, failure_reason = ?, updated_at = ? WHERE task_id = ?",
        std::string_view(fails ? "failed" : "queued"), attempts, reason, now, task.task_id);
    if (fails) run(kForgetExclusions, task.task_id);
    log_info("market", "task {} lease {} {}: {} (attempt {} of {})", task.task_id, lease_id, lease_state,
             fails ? "task failed" : "task requeued", attempts, policy.max_attempts);
    return fails ? "failed" : "queued";
  }

  int expire_due(std::int64_t now) {
    Transaction transaction(*this);
    std::vector<std::pair<std::string, std::string>> due;  // (lease, task)
    {
      Statement rows = query("SELECT lease_id, task_id FROM leases WHERE state = 'active' AND expires_at < ?", now);
      while (rows.next()) due.emplace_back(rows.text(0), rows.text(1));
    }
    for (const auto& [lease_id, task_id] : due) {
      const std::optional<TaskRow> task = find_task(task_id);
      if (task) end_attempt(*task, lease_id, "expired", true, true, "lease " + lease_id + " expired", now);
    }
    const int jobs = run("UPDATE verification_jobs SET state = 'expired' WHERE state = 'active' AND expires_at < ?", now);
    transaction.commit();
    if (jobs > 0) log_info("market", "{} verification job(s) expired; their tasks can be claimed for verification again", jobs);
    return static_cast<int>(due.size()) + jobs;
  }

  std::vector<CheckpointCommitment> commitments_of(const std::string& lease_id) {
    std::vector<CheckpointCommitment> commitments;
    Statement rows = query("SELECT step, sha256 FROM commitments WHERE lease_id = ? ORDER BY step", lease_id);
    while (rows.next()) commitments.push_back({rows.integer(0), rows.text(1)});
    return commitments;
  }
};

Store::Store(const std::filesystem::path& path, StorePolicy policy) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->policy = policy;
  try {
    impl_->open();
  } catch (...) {
    sqlite3_close(impl_->db);
    throw;
  }
}

Store::~Store() { sqlite3_close(impl_->db); }

bool Store::remember_nonce(const std::string& key, const std::string& nonce, std::int64_t timestamp, std::int64_t now) {
  std::lock_guard lock(impl_->mutex);
  Impl::Transaction transaction(*impl_);
  impl_->run("DELETE FROM nonces WHERE timestamp < ?", now - net::kRequestWindowSeconds);
  const bool fresh = impl_->run("INSERT OR IGNORE INTO nonces (key, nonce, timestamp) VALUES (?, ?, ?)", key, nonce, timestamp) == 1;
  transaction.commit();
  return fresh;
}

void Store::register_worker(const std::string& key, const net::WorkerProfile& profile, std::int64_t now) {
  std::lock_guard lock(impl_->mutex);
  Impl::Transaction transaction(*impl_);
  impl_->run(
      "INSERT INTO workers (key, profile, registered_at, updated_at) VALUES (?, ?, ?, ?) "
      "ON CONFLICT (key) DO UPDATE SET profile = excluded.profile, updated_at = excluded.updated_at",
      key, net::to_json(profile).dump(), now, now);
  transaction.commit();
}

std::optional<net::WorkerProfile> Store::worker(const std::string& key) {
  std::lock_guard lock(impl_->mutex);
  Statement row = impl_->query("SELECT profile FROM workers WHERE key = ?", key);
  if (!row.next()) return std::nullopt;
  return net::parse_worker_profile(json::parse(row.text(0)), "worker");
}

bool Store::is_known_key(const std::string& key) {
  std::lock_guard lock(impl_->mutex);
  Statement row = impl_->query(
      "SELECT EXISTS (SELECT 1 FROM workers WHERE key = ?1) OR EXISTS (SELECT 1 FROM tasks WHERE submitter = ?1)", key);
  return row.next() && row.integer(0) != 0;
}

bool Store::submit_task(const NewTask& task, std::int64_t now) {
  std::lock_guard lock(impl_->mutex);
  Impl::Transaction transaction(*impl_);
  const std::string name = task.task.contains("id") && task.task["id"].is_string() ? task.task["id"].get<std::string>() : std::string();
  const bool stored = impl_->run(
                          "INSERT OR IGNORE INTO tasks (task_id, name, submitter, task, task_sha256, model_kind, max_memory_mb, state, "
                          "submitted_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                          task.task_id, name, task.submitter, canonical_json(task.task), task.task_sha256, task.model_kind,
                          task.max_memory_mb, now, now) == 1;
  if (!stored) {
    const TaskRow existing = impl_->task_or_refuse(task.task_id);
    if (existing.task_sha256 != task.task_sha256 || existing.submitter != task.submitter)
      throw Refusal(409, "task_id_collision", "task id " + task.task_id + " is taken by another task; change the task's id or seed");
  }
  transaction.commit();
  if (stored) log_info("market", "task {} ({}) submitted by {}…", task.task_id, name, short_key(task.submitter));
  return stored;
}

void Store::cancel_task(const std::string& task_id, const std::string& key, std::int64_t now) {
  std::lock_guard lock(impl_->mutex);
  Impl::Transaction transaction(*impl_);
  const TaskRow task = impl_->task_or_refuse(task_id);
  if (task.submitter != key) throw Refusal(403, "not_submitter", "only the key that submitted task " + task_id + " may cancel it");
  if (task.state == "cancelled") return;
  if (task.state != "queued" && task.state != "leased")
    throw Refusal(409, "not_cancellable", "task " + task_id + " is " + task.state + "; only queued or leased tasks can be cancelled");
  if (task.state == "leased" && task.last_lease)
    impl_->run("UPDATE leases SET state = 'cancelled', ended_at = ? WHERE lease_id = ? AND state = 'active'", now, *task.last_lease);
  impl_->run("UPDATE tasks SET state = 'cancelled', updated_at = ? WHERE task_id = ?", now, task_id);
  impl_->run(kForgetExclusions, task_id);
  transaction.commit();
  log_info("market", "task {} cancelled by its submitter", task_id);
}

std::optional<net::Lease> Store::claim_task(const std::string& key, const net::WorkerProfile& profile, std::int64_t now) {
  std::lock_guard lock(impl_->mutex);
  impl_->expire_due(now);
  Impl::Transaction transaction(*impl_);
  {
    Statement held = impl_->query("SELECT faults_in_a_row, held_until FROM workers WHERE key = ?", key);
    if (held.next() && held.integer(1) > now)
      throw Refusal(403, "held_back",
                    fmt::format("{} tasks in a row failed on this worker by no fault of their own; it may claim again in "
                                "{} s", held.integer(0), held.integer(1) - now),
                    static_cast<int>(held.integer(1) - now));
  }
  // A worker lists at most every model kind; the kinds it lacks are bound as "" and match nothing.
  static_assert(kModelKinds.size() == 4, "one placeholder per model kind below");
  std::array<std::string, kModelKinds.size()> kinds;
  for (std::size_t i = 0; i < kinds.size() && i < profile.model_kinds.size(); ++i) kinds[i] = profile.model_kinds[i];
  Statement row = impl_->query(
      "SELECT task_id, task, task_sha256 FROM tasks t WHERE state = 'queued' AND model_kind IN (?, ?, ?, ?) "
      "AND (max_memory_mb = 0 OR max_memory_mb <= ?) "
      "AND NOT EXISTS (SELECT 1 FROM exclusions e WHERE e.task_id = t.task_id AND e.worker = ?) ORDER BY seq LIMIT 1",
      kinds[0], kinds[1], kinds[2], kinds[3], profile.memory_mb, key);
  if (!row.next()) return std::nullopt;
  net::Lease lease;
  lease.task_id = row.text(0);
  lease.task = json::parse(row.text(1));
  lease.task_sha256 = row.text(2);
  lease.lease_id = net::random_nonce();
  lease.lease_seconds = impl_->policy.lease_seconds;
  lease.expires_at = now + lease.lease_seconds;
  impl_->run("INSERT INTO leases (lease_id, task_id, worker, state, claimed_at, expires_at) VALUES (?, ?, ?, 'active', ?, ?)",
             lease.lease_id, lease.task_id, key, now, lease.expires_at);
  impl_->run("UPDATE tasks SET state = 'leased', solver = ?, last_lease = ?, updated_at = ? WHERE task_id = ?", key,
             lease.lease_id, now, lease.task_id);
  transaction.commit();
  log_info("market", "task {} leased to {}… (lease {}, {} s)", lease.task_id, short_key(key), lease.lease_id, lease.lease_seconds);
  return lease;
}

net::HeartbeatReply Store::heartbeat(const std::string& task_id, const std::string& key, const net::Heartbeat& beat, std::int64_t now) {
  std::lock_guard lock(impl_->mutex);
  impl_->expire_due(now);
  Impl::Transaction transaction(*impl_);
  TaskRow task = impl_->task_or_refuse(task_id);
  LeaseRow lease = impl_->owned_lease(task, beat.lease_id, key);
  if (lease.state == "cancelled") return {lease.expires_at, true, "task " + task_id + " was cancelled by its submitter"};
  impl_->require_active(task, lease, now);

  // A commitment is final: the same step with another hash would let a solver rewrite its bundle.
  for (const CheckpointCommitment& commitment : beat.checkpoints) {
    Statement existing = impl_->query("SELECT sha256 FROM commitments WHERE lease_id = ? AND step = ?", lease.lease_id, commitment.step);
    if (existing.next()) {
      if (existing.text(0) != commitment.sha256)
        throw Refusal(409, "commitment_conflict", "step " + std::to_string(commitment.step) + " of lease " + lease.lease_id +
                                                      " was committed as " + existing.text(0) + "; it cannot become " + commitment.sha256);
      continue;
    }
    impl_->run("INSERT INTO commitments (lease_id, task_id, step, sha256, received_at) VALUES (?, ?, ?, ?, ?)", lease.lease_id,
               task_id, commitment.step, commitment.sha256, now);
  }
  const std::int64_t expires_at = now + impl_->policy.lease_seconds;
  impl_->run("UPDATE leases SET expires_at = ? WHERE lease_id = ?", expires_at, lease.lease_id);
  impl_->run(
      "UPDATE tasks SET progress_step = ?, progress_total = ?, progress_loss = ?, progress_updated_at = ?, updated_at = ? "
      "WHERE task_id = ?",
      beat.step, beat.total_steps, beat.loss, now, now, task_id);
  transaction.commit();
  return {expires_at, false, ""};
}

void Store::complete_task(const std::string& task_id, const std::string& key, const net::Completion& completion, std::int64_t now) {
  std::lock_guard lock(impl_->mutex);
  impl_->expire_due(now);
  Impl::Transaction transaction(*impl_);
  TaskRow task = impl_->task_or_refuse(task_id);
  LeaseRow lease = impl_->owned_lease(task, completion.lease_id, key);
  if (lease.state == "completed") {
    Statement stored = impl_->query("SELECT bundle_address, manifest_sha256, manifest_signature FROM tasks WHERE task_id = ?", task_id);
    stored.next();
    if (stored.text(0) == completion.bundle_address && stored.text(1) == completion.manifest_sha256 &&
        stored.text(2) == completion.manifest_signature)
      return;  // the same completion again: a retry after a lost reply
    throw Refusal(409, "already_completed", "task " + task_id + " was already completed by lease " + lease.lease_id +
                                                " with bundle " + stored.text(0) + " and manifest " + stored.text(1) + "; a completion cannot be changed");
  }
  impl_->require_active(task, lease, now);
  impl_->run("UPDATE leases SET state = 'completed', ended_at = ? WHERE lease_id = ?", now, lease.lease_id);
  impl_->run(
      "UPDATE tasks SET state = 'completed', solver = ?, completion_lease = ?, bundle_address = ?, manifest_sha256 = ?, "
      "manifest_signature = ?, completed_at = ?, updated_at = ? WHERE task_id = ?",
      key, lease.lease_id, completion.bundle_address, completion.manifest_sha256, completion.manifest_signature, now, now, task_id);
  impl_->run("UPDATE workers SET faults_in_a_row = 0, held_until = 0 WHERE key = ?", key);
  impl_->run(kForgetExclusions, task_id);
  transaction.commit();
  log_info("market", "task {} completed by {}…: bundle {}", task_id, short_key(key), completion.bundle_address);
}

std::string Store::fail_task(const std::string& task_id, const std::string& key, const net::FailureReport& report,
                             std::int64_t now) {
  std::lock_guard lock(impl_->mutex);
  impl_->expire_due(now);
  Impl::Transaction transaction(*impl_);
  TaskRow task = impl_->task_or_refuse(task_id);
  LeaseRow lease = impl_->owned_lease(task, report.lease_id, key);
  if (lease.state == "failed" || lease.state == "cancelled") return task.state;  // already ended: a retry, or a task cancelled meanwhile
  impl_->require_active(task, lease, now);
  // The task's fault fails it; any other goes back to the queue for another worker, counted as
  // an attempt unless the worker owned up to it, and holds the worker back if it keeps happening.
  const bool task_fault = report.fault == net::Fault::Task;
  std::string reason = report.reason.empty() ? "failed by its solver" : report.reason.substr(0, kMaxReasonBytes);
  reason = std::string(net::fault_name(report.fault)) + " fault: " + reason;
  const std::string state = impl_->end_attempt(task, lease.lease_id, "failed", !task_fault,
                                               report.fault != net::Fault::Worker, reason, now);
  if (!task_fault) {
    if (state == "queued") impl_->run("INSERT OR IGNORE INTO exclusions (task_id, worker) VALUES (?, ?)", task_id, key);
    std::int64_t faults = 1;
    {
      Statement row = impl_->query("SELECT faults_in_a_row FROM workers WHERE key = ?", key);
      if (row.next()) faults = row.integer(0) + 1;
    }
    const std::int64_t hold = hold_seconds(faults, impl_->policy.fault_hold_seconds);
    impl_->run("UPDATE workers SET faults_in_a_row = ?, held_until = ? WHERE key = ?", faults, now + hold, key);
    if (hold > 0)
      log_info("market", "worker {}… held back for {} s: {} failures in a row not down to their tasks", short_key(key), hold,
               faults);
  }
  transaction.commit();
  return state;
}

std::string Store::release_task(const std::string& task_id, const std::string& key, const net::Release& release,
                                std::int64_t now) {
  std::lock_guard lock(impl_->mutex);
  impl_->expire_due(now);
  Impl::Transaction transaction(*impl_);
  const TaskRow task = impl_->task_or_refuse(task_id);
  const LeaseRow lease = impl_->owned_lease(task, release.lease_id, key);
  if (lease.state == "released") return task.state;  // a retry after a lost reply
  if (task.state != "leased" || task.last_lease != lease.lease_id || lease.state != "active")
    throw Refusal(409, "not_leased", "task " + task_id + " is " + task.state + " and lease " + lease.lease_id + " is " +
                                         lease.state + "; only a task's active lease can be released");
  impl_->run("UPDATE leases SET state = 'released', ended_at = ? WHERE lease_id = ?", now, lease.lease_id);
  impl_->run("UPDATE tasks SET state = 'queued', updated_at = ? WHERE task_id = ?", now, task_id);
  transaction.commit();
  log_info("market", "task {} released by {}… (lease {}): queued again, attempt {} of {} unchanged{}", task_id,
           short_key(key), lease.lease_id, task.attempts, impl_->policy.max_attempts,
           release.reason.empty() ? "" : ": " + release.reason.substr(0, kMaxReasonBytes));
  return "queued";
}

std::optional<net::VerificationJob> Store::claim_verification(const std::string& key, std::int64_t now) {
  std::lock_guard lock(impl_->mutex);
  impl_->expire_due(now);
  Impl::Transaction transaction(*impl_);
  Statement row = impl_->query(
      "SELECT task_id, task, task_sha256, bundle_address, manifest_sha256, solver, completion_lease FROM tasks t "
      "WHERE state = 'completed' AND solver <> ?1 "
      "AND NOT EXISTS (SELECT 1 FROM verification_jobs j WHERE j.task_id = t.task_id AND j.state = 'active') "
      "AND NOT EXISTS (SELECT 1 FROM verification_jobs d WHERE d.task_id = t.task_id AND d.verifier = ?1 AND d.state = 'declined') "
      "ORDER BY completed_at, seq LIMIT 1",
      key);
  if (!row.next()) return std::nullopt;
  net::VerificationJob job;
  job.job_id = net::random_nonce();
  job.task_id = row.text(0);
  job.task = json::parse(row.text(1));
  job.task_sha256 = row.text(2);
  job.bundle_address = row.text(3);
  job.manifest_sha256 = row.text(4);
  job.solver_key = row.text(5);
  job.commitments = impl_->commitments_of(row.text(6));
  job.lease_seconds = impl_->policy.verification_lease_seconds;
  impl_->run("INSERT INTO verification_jobs (job_id, task_id, verifier, state, claimed_at, expires_at) VALUES (?, ?, ?, 'active', ?, ?)",
             job.job_id, job.task_id, key, now, now + job.lease_seconds);
  transaction.commit();
  log_info("market", "task {} claimed for verification by {}… (job {})", job.task_id, short_key(key), job.job_id);
  return job;
}

void Store::decline_verification(const std::string& job_id, const std::string& key, const std::string& reason, std::int64_t now) {
  std::lock_guard lock(impl_->mutex);
  impl_->expire_due(now);
  Impl::Transaction transaction(*impl_);
  Statement row = impl_->query("SELECT verifier, state FROM verification_jobs WHERE job_id = ?", job_id);
  if (!row.next()) throw Refusal(404, "job_not_found", "no verification job with id \"" + job_id + "\"");
  if (row.text(0) != key)
    throw Refusal(409, "job_not_yours", "verification job " + job_id + " belongs to " + short_key(row.text(0)) + "…, not to " + short_key(key) + "…");
  const std::string state = row.text(1);
  if (state == "declined") return;  // a retry
  if (state == "decided") throw Refusal(409, "verdict_conflict", "verification job " + job_id + " already returned a verdict");
  impl_->run("UPDATE verification_jobs SET state = 'declined', reason = ?, decided_at = ? WHERE job_id = ?", reason, now, job_id);
  transaction.commit();
  log_info("market", "verification job {} declined by {}…: {}", job_id, short_key(key), reason);
}

void Store::record_verdict(const std::string& job_id, const std::string& key, const VerdictSummary& verdict, std::int64_t now) {
  std::lock_guard lock(impl_->mutex);
  impl_->expire_due(now);
  Impl::Transaction transaction(*impl_);
  Statement row = impl_->query("SELECT job_id, task_id, verifier, state, accepted, reason, report FROM verification_jobs WHERE job_id = ?", job_id);
  if (!row.next()) throw Refusal(404, "job_not_found", "no verification job with id \"" + job_id + "\"");
  const JobRow job{row.text(0), row.text(1), row.text(2), row.text(3), row.integer(4) != 0, row.text(5), row.text(6)};
  if (job.verifier != key)
    throw Refusal(409, "job_not_yours", "verification job " + job_id + " belongs to " + short_key(job.verifier) + "…, not to " + short_key(key) + "…");
  const std::string report = canonical_json(verdict.report);
  if (job.state == "declined")
    throw Refusal(409, "job_declined", "verification job " + job_id + " was declined; it takes no verdict");
  if (job.state == "decided") {
    if (job.accepted == verdict.accepted && job.reason == verdict.reason && job.report == report) return;  // a retry
    throw Refusal(409, "verdict_conflict", "verification job " + job_id + " already returned a verdict (" +
                                               (job.accepted ? "accepted" : "rejected") + "); it cannot be changed");
  }
  const TaskRow task = impl_->task_or_refuse(job.task_id);
  if (job.state == "expired") {
    Statement others = impl_->query("SELECT 1 FROM verification_jobs WHERE task_id = ? AND state = 'active'", job.task_id);
    if (task.state != "completed" || others.next())
      throw Refusal(409, "job_expired", "verification job " + job_id + " expired and task " + job.task_id +
                                            " has been given to another verifier or decided since");
  }
  impl_->run("UPDATE verification_jobs SET state = 'decided', accepted = ?, reason = ?, report = ?, decided_at = ? WHERE job_id = ?",
             verdict.accepted, verdict.reason, report, now, job_id);
  impl_->run("UPDATE tasks SET state = ?, updated_at = ? WHERE task_id = ?", std::string_view(verdict.accepted ? "verified" : "rejected"),
             now, job.task_id);
  transaction.commit();
  log_info("market", "task {} {} by verifier {}…{}", job.task_id, verdict.accepted ? "verified" : "rejected", short_key(key),
           verdict.reason.empty() ? "" : ": " + verdict.reason);
}

int Store::expire_due(std::int64_t now) {
  std::lock_guard lock(impl_->mutex);
  return impl_->expire_due(now);
}

json Store::task_status(const std::string& task_id) {
  std::lock_guard lock(impl_->mutex);
  Statement row = impl_->query(
      "SELECT task_id, name, state, attempts, submitter, task_sha256, model_kind, submitted_at, updated_at, solver, last_lease, "
      "progress_step, progress_total, progress_loss, progress_updated_at, completion_lease, bundle_address, manifest_sha256, "
      "manifest_signature, completed_at, failure_reason, task FROM tasks WHERE task_id = ?",
      task_id);
  if (!row.next()) throw Refusal(404, "task_not_found", "no task with id \"" + task_id + "\"");
  json status = {{"task_id", row.text(0)},      {"name", row.text(1)},         {"state", row.text(2)},
                 {"attempts", row.integer(3)},  {"submitter", row.text(4)},    {"task_sha256", row.text(5)},
                 {"model_kind", row.text(6)},   {"submitted_at", row.integer(7)}, {"updated_at", row.integer(8)},
                 {"solver", nullptr},           {"lease", nullptr},
                 {"completion", nullptr},       {"failure_reason", nullptr},   {"task", json::parse(row.text(21))}};
  if (!row.is_null(9)) status["solver"] = row.text(9);
  if (row.text(2) == "leased") {
    Statement lease = impl_->query("SELECT lease_id, expires_at FROM leases WHERE lease_id = ?", row.text(10));
    if (lease.next()) status["lease"] = {{"lease_id", lease.text(0)}, {"expires_at", lease.integer(1)}};
  }
  status["progress"] = progress_json(row, 11);
  if (!row.is_null(15))
    status["completion"] = {{"lease_id", row.text(15)},           {"bundle_address", row.text(16)}, {"manifest_sha256", row.text(17)},
                            {"manifest_signature", row.text(18)}, {"completed_at", row.integer(19)}};
  if (!row.is_null(20)) status["failure_reason"] = row.text(20);

  json commitments = json::array();
  Statement commitment = impl_->query(
      "SELECT lease_id, step, sha256, received_at FROM commitments WHERE task_id = ? ORDER BY received_at, lease_id, step", task_id);
  while (commitment.next())
    commitments.push_back({{"lease_id", commitment.text(0)}, {"step", commitment.integer(1)}, {"sha256", commitment.text(2)}, {"received_at", commitment.integer(3)}});
  status["commitments"] = std::move(commitments);

  json verdicts = json::array();
  Statement verdict = impl_->query(
      "SELECT job_id, verifier, accepted, reason, report, decided_at FROM verification_jobs WHERE task_id = ? AND state = 'decided' "
      "ORDER BY decided_at",
      task_id);
  while (verdict.next())
    verdicts.push_back({{"job_id", verdict.text(0)},    {"verifier", verdict.text(1)}, {"accepted", verdict.integer(2) != 0},
                        {"reason", verdict.text(3)},    {"report", json::parse(verdict.text(4))}, {"decided_at", verdict.integer(5)}});
  status["verdicts"] = std::move(verdicts);
  return status;
}

TaskPage Store::list_tasks(const std::string& after, std::size_t limit) {
  std::lock_guard lock(impl_->mutex);
  std::int64_t after_seq = 0;
  if (!after.empty()) {
    Statement row = impl_->query("SELECT seq FROM tasks WHERE task_id = ?", after);
    if (!row.next()) throw Refusal(400, "bad_request", "after: no task with id \"" + after + "\"");
    after_seq = row.integer(0);
  }
  TaskPage page{json::array(), std::nullopt};
  // One row more than the page holds tells whether another page follows.
  Statement row = impl_->query(
      "SELECT task_id, name, state, attempts, submitter, solver, model_kind, submitted_at, updated_at, progress_step, progress_total, "
      "progress_loss, progress_updated_at FROM tasks WHERE seq > ? ORDER BY seq LIMIT ?",
      after_seq, static_cast<std::int64_t>(limit) + 1);
  while (row.next()) {
    if (page.tasks.size() == limit) {
      page.next = page.tasks.back()["task_id"].get<std::string>();
      break;
    }
    json task = {{"task_id", row.text(0)},    {"name", row.text(1)},         {"state", row.text(2)},
                 {"attempts", row.integer(3)}, {"submitter", row.text(4)},   {"solver", nullptr},
                 {"model_kind", row.text(6)},  {"submitted_at", row.integer(7)}, {"updated_at", row.integer(8)}};
    if (!row.is_null(5)) task["solver"] = row.text(5);
    task["progress"] = progress_json(row, 9);
    page.tasks.push_back(std::move(task));
  }
  return page;
}

}  // namespace solver::market
