// The package installed with dpkg and run as its unit says, then upgraded under the running
// agent, without changing this machine: each test makes a sandbox (a mount namespace of its own
// in which / is an overlay over a tmpfs, chrooted into), where dpkg installs for real and
// postinst makes the user and folders. No systemd runs there, so the test does what systemd
// would (the unit's user, umask and environment, a notify socket it reads) and what postinst's
// `systemctl try-restart` does on an upgrade. The sandbox shares this machine's network, so the
// agent in it reaches the market the test runs on 127.0.0.1.
#include <signal.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <map>
#include <regex>
#include <sstream>

#include "common/files.h"
#include "tests/e2e/agent_support.h"
#include "tests/e2e/e2e_support.h"
#include "tests/e2e/notify_socket.h"
#include "tests/e2e/package_support.h"

namespace solver::test {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const std::string kSystemPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Run by unshare in a new mount namespace (private: nothing propagates back to this machine).
// It ends by sleeping chrooted in the sandbox, so the namespace lives as long as that process.
const char* const kSandboxScript = R"(set -e
scratch="$1"
mount -t tmpfs solver-sandbox "$scratch"
mkdir "$scratch/upper" "$scratch/work" "$scratch/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$scratch/upper,workdir=$scratch/work" "$scratch/root"
for dir in proc sys dev; do mount --rbind "/$dir" "$scratch/root/$dir"; done
# A rig's /run and the unit's PrivateTmp=yes: empty. With no /run/systemd/system there,
# postinst asks no systemd to restart anything.
mount -t tmpfs -o mode=0755 run "$scratch/root/run"
mount -t tmpfs -o mode=1777 tmp "$scratch/root/tmp"
echo "sandbox ready"
exec chroot "$scratch/root" /bin/sleep infinity
)";

// A throwaway copy of this machine's root. Commands join it with nsenter; the test reads and
// writes its files through /proc/<pid>/root of the process that holds it.
class Sandbox {
 public:
  Sandbox()
      : holder_({"/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", kSandboxScript, "sandbox",
                 mount_point(dir_).string()},
                dir_ / "sandbox.log") {
    ready_ = holder_.wait_for_output("sandbox ready", 30);
  }
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  bool ready() const { return ready_; }
  std::string setup_output() const { return holder_.output(); }

  // A path inside the sandbox, as this process reaches it.
  fs::path path(const std::string& inside) const {
    return fs::path("/proc/" + std::to_string(holder_.pid()) + "/root") / inside.substr(1);
  }
  // argv run in the sandbox's mounts, root and working folder.
  std::vector<std::string> inside(const std::vector<std::string>& argv) const {
    std::vector<std::string> joined{"/usr/bin/nsenter", "--target", std::to_string(holder_.pid()), "--mount", "--root", "--wd"};
    joined.insert(joined.end(), argv.begin(), argv.end());
    return joined;
  }
  CommandResult run(const std::vector<std::string>& argv) const { return run_command(inside(argv)); }

 private:
  static fs::path mount_point(const ScratchDir& dir) {
    fs::create_directories(dir / "mnt");
    return dir / "mnt";
  }

  ScratchDir dir_{"sandbox"};
  BackgroundProcess holder_;
  bool ready_ = false;
};

// `dpkg -i` in the sandbox, the package copied in first as apt downloads it.
void install(const Sandbox& sandbox, const fs::path& deb) {
  const std::string inside = "/tmp/" + deb.filename().string();
  fs::copy_file(deb, sandbox.path(inside), fs::copy_options::overwrite_existing);
  const CommandResult result = sandbox.run({"/usr/bin/env", kSystemPath, "/usr/bin/dpkg", "-i", inside});
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
}

// What the test needs from the installed unit.
struct Unit {
  std::vector<std::string> exec_start;
  std::string user;
  std::string group;
  std::string umask;
};

Unit read_unit(const fs::path& file) {
  std::map<std::string, std::string> settings;
  std::istringstream lines(read_file(file));
  for (std::string line; std::getline(lines, line);)
    if (const std::size_t equals = line.find('='); equals != std::string::npos && line[0] != '#')
      settings.emplace(line.substr(0, equals), line.substr(equals + 1));  // the first of each
  Unit unit{{}, settings["User"], settings["Group"], settings["UMask"]};
  std::istringstream words(settings["ExecStart"]);
  for (std::string word; words >> word;) unit.exec_start.push_back(word);
  REQUIRE(!unit.exec_start.empty());
  REQUIRE(!unit.user.empty());
  REQUIRE(!unit.group.empty());
  REQUIRE(!unit.umask.empty());
  return unit;
}

// The unit's ExecStart as systemd starts it: as User and Group with the user's groups, no new
// privileges, the UMask, and only the environment systemd gives this unit, with the notify
// socket. The watchdog is 2 s rather than the unit's WatchdogSec, to see pings within the test.
std::vector<std::string> service_command(const Unit& unit, const std::string& notify_socket) {
  std::vector<std::string> argv{"/usr/bin/setpriv", "--reuid=" + unit.user, "--regid=" + unit.group, "--init-groups",
                                "--no-new-privs", "/usr/bin/env", "-i", kSystemPath,
                                // the user's home as postinst's adduser made it, and the unit's folders
                                "HOME=/var/lib/solver", "USER=" + unit.user, "LOGNAME=" + unit.user,
                                "STATE_DIRECTORY=/var/lib/solver", "CACHE_DIRECTORY=/var/cache/solver",
                                "NOTIFY_SOCKET=" + notify_socket, "WATCHDOG_USEC=2000000",
                                "/bin/sh", "-c", "umask " + unit.umask + " && exec \"$@\"", "solver.service"};
  argv.insert(argv.end(), unit.exec_start.begin(), unit.exec_start.end());
  return argv;
}

// The operator's edit of the shipped conffile: this market, task files from this machine, quick
// polls and heartbeats, one training thread, and `changes`. Returns the file's new text.
std::string configure(const Sandbox& sandbox, const std::string& market_url, const json& changes) {
  const fs::path file = sandbox.path("/etc/solver/agent.json");
  json config = json::parse(read_file(file), nullptr, /*allow_exceptions=*/true, /*ignore_comments=*/true);
  config.merge_patch({{"market", market_url},
                      {"allow_local_files", true},
                      {"roles", {"solve"}},
                      {"threads", 1},
                      {"heartbeat_seconds", 1},
                      {"poll", {{"min_seconds", 0.2}, {"max_seconds", 1}}},
                      {"limits", {{"min_free_disk_gb", 0}}}});
  config.merge_patch(changes);
  const std::string text = "// edited by the operator\n" + config.dump(2) + "\n";
  write_text(file, text);
  return text;
}

// The service manager's end of NOTIFY_SOCKET, inside the sandbox at /run/notify.sock, writable by the
// service's user as systemd's own is.
struct ServiceNotifySocket {
  static constexpr const char* kInside = "/run/notify.sock";
  explicit ServiceNotifySocket(const Sandbox& sandbox) : socket(sandbox.path(kInside)) {
    fs::permissions(sandbox.path(kInside), fs::perms::all);
  }
  NotifySocket socket;
};

// Fails the test, with the end of the agent's log, when `happened` is false.
void require_seen(bool happened, const std::string& what, const BackgroundProcess& agent) {
  INFO("expected " << what << "; the agent's log ends with:\n" << agent.output_tail(4000));
  REQUIRE(happened);
}

// False, with a warning, where this machine allows no sandbox (unshare and overlay need root).
bool usable_or_skipped(const Sandbox& sandbox) {
  if (sandbox.ready()) return true;
  WARN("skipped: cannot make a sandbox (a mount namespace with an overlay of /) here:\n" << sandbox.setup_output());
  SUCCEED();
  return false;
}

fs::path fashion_mnist_task() { return source_dir() / "configs" / "tasks" / "fashion-mnist-mlp.json"; }

// The next version of a package: the same files, Version with "+b1" added, as a rebuild is numbered.
struct RepackedPackage {
  fs::path deb;
  std::string version;
};

RepackedPackage next_version(const fs::path& deb, const fs::path& dir) {
  const fs::path tree = dir / "next";
  REQUIRE(run_command({"/usr/bin/dpkg-deb", "-R", deb.string(), tree.string()}).exit_code == 0);
  const fs::path control = tree / "DEBIAN" / "control";
  const std::string text = read_file(control);
  std::smatch match;
  REQUIRE(std::regex_search(text, match, std::regex("\nVersion: ([^\n]+)")));
  RepackedPackage next{dir / ("solver_" + match[1].str() + "+b1_amd64.deb"), match[1].str() + "+b1"};
  write_text(control, std::string(match.prefix()) + "\nVersion: " + next.version + std::string(match.suffix()));
  const CommandResult built = run_command({"/usr/bin/dpkg-deb", "-b", tree.string(), next.deb.string()});
  INFO(built.output);
  REQUIRE(built.exit_code == 0);
  return next;
}

TEST_CASE("package: installed with dpkg, the agent runs as its unit says: READY, STATUS, WATCHDOG, a 0600 key of its own, "
          "the task completed, STOPPING and exit 0 on SIGTERM", "[e2e]") {
  Sandbox sandbox;
  if (!usable_or_skipped(sandbox)) return;
  ScratchDir dir("installed-service");
  install(sandbox, built_package().deb);
  const Unit unit = read_unit(sandbox.path(kUnitPath));
  CHECK(unit.user == "solver");
  const auto submitter_key = make_key(dir / "submitter");
  Market market(dir.path(), 0);
  configure(sandbox, market.url(), json::object());
  const std::string task_id = submit(market.url(), submitter_key, fashion_mnist_task());

  ServiceNotifySocket notify(sandbox);
  BackgroundProcess agent(sandbox.inside(service_command(unit, ServiceNotifySocket::kInside)), dir / "agent.log");
  require_seen(notify.socket.wait_for_line("READY=1", 60).has_value(), "READY=1", agent);
  require_seen(notify.socket.wait_for([&](const std::string& line) {
                 return line.rfind("STATUS=training task " + task_id + " step ", 0) == 0;
               }, 60).has_value(), "a STATUS= line with the task", agent);
  require_seen(notify.socket.wait_for_line("WATCHDOG=1", 3).has_value(), "WATCHDOG=1", agent);

  // Made by the agent at its first start, as the service's user, with the unit's umask.
  const CommandResult key = sandbox.run({"/usr/bin/stat", "-c", "%a %U:%G", "/var/lib/solver/solver.key"});
  INFO(key.output);
  CHECK(key.output == "600 solver:solver\n");

  require_seen(agent.wait_for_output("task=" + task_id + " completed", 120), "the task completed", agent);
  CHECK(task_status(market.url(), submitter_key, task_id)["state"] == "completed");

  agent.signal(SIGTERM);
  require_seen(notify.socket.wait_for_line("STOPPING=1", 10).has_value(), "STOPPING=1", agent);
  const std::optional<int> exit_status = agent.wait(30);
  INFO(agent.output_tail());
  CHECK(exit_status == 0);
}

TEST_CASE("package: an upgrade under a running agent keeps the key, state and config, and the task in flight resumes "
          "from its checkpoint and completes", "[e2e]") {
  Sandbox sandbox;
  if (!usable_or_skipped(sandbox)) return;
  ScratchDir dir("installed-upgrade");
  install(sandbox, built_package().deb);
  const Unit unit = read_unit(sandbox.path(kUnitPath));
  const auto submitter_key = make_key(dir / "submitter");
  Market market(dir.path(), 0);
  const std::string operators_config = configure(sandbox, market.url(), {{"name", "rig-07"}});
  const std::string task_id = submit(market.url(), submitter_key, fashion_mnist_task());
  // Made beforehand, so that the upgrade comes soon after the first checkpoint, long before the end.
  const RepackedPackage next = next_version(built_package().deb, dir.path());

  ServiceNotifySocket notify(sandbox);
  const std::vector<std::string> command = sandbox.inside(service_command(unit, ServiceNotifySocket::kInside));
  std::string key_bytes;
  int committed_step = 0;
  {
    BackgroundProcess agent(command, dir / "agent-before.log");
    require_seen(notify.socket.wait_for_line("READY=1", 60).has_value(), "READY=1", agent);
    const std::optional<std::string> committed = agent.wait_for_match("checkpoint step=([1-9][0-9]*) committed", 60);
    require_seen(committed.has_value(), "a checkpoint committed", agent);
    committed_step = std::stoi(*committed);
    key_bytes = read_file(sandbox.path("/var/lib/solver/solver.key"));

    // dpkg replaces the files under the running agent, as on a rig...
    install(sandbox, next.deb);
    const CommandResult version = sandbox.run({"/usr/bin/dpkg-query", "-W", "-f=${Version}", "solver"});
    CHECK(version.output == next.version);
    require_seen(agent.running(), "the agent still running after dpkg", agent);

    // ...then postinst's try-restart: stop (the agent checkpoints, keeping its lease), start again.
    agent.signal(SIGTERM);
    require_seen(notify.socket.wait_for_line("STOPPING=1", 10).has_value(), "STOPPING=1", agent);
    const std::optional<int> exit_status = agent.wait(60);
    require_seen(exit_status == 0, "exit 0 on SIGTERM", agent);
    require_seen(agent.output().find("task=" + task_id + " stopped at step") != std::string::npos,
                 "the task stopped unfinished", agent);
  }
  CHECK(read_file(sandbox.path("/etc/solver/agent.json")) == operators_config);
  CHECK(read_file(sandbox.path("/var/lib/solver/solver.key")) == key_bytes);

  BackgroundProcess agent(command, dir / "agent-after.log");
  require_seen(notify.socket.wait_for_line("READY=1", 60).has_value(), "READY=1 from the new version", agent);
  CHECK_THAT(agent.output(), Catch::Contains("registered with " + market.url() + " as rig-07 "));  // the operator's config
  const std::optional<std::string> resumed = agent.wait_for_match("resuming from checkpoint step=([0-9]+)", 60);
  require_seen(resumed.has_value(), "the task resumed from a checkpoint", agent);
  CHECK(std::stoi(*resumed) >= committed_step);
  require_seen(agent.wait_for_output("task=" + task_id + " completed", 120), "the task completed", agent);

  const json status = task_status(market.url(), submitter_key, task_id);
  CHECK(status["state"] == "completed");
  CHECK(status["attempts"] == 0);  // one lease throughout: the upgrade lost no work to another solver
}

}  // namespace
}  // namespace solver::test
