#include "tests/e2e/e2e_support.h"

#include <catch2/catch.hpp>

#include "common/files.h"

namespace solver::test {

nlohmann::json small_task(const std::string& id, int steps, int checkpoint_every, const nlohmann::json& model) {
  const std::string data = fashion_mnist_dir().string() + "/";
  auto file = [&](const char* name, const char* sha256) {
    return nlohmann::json{{"location", data + name}, {"sha256", sha256}};
  };
  return {{"id", id},
          {"seed", 1234},
          {"model", model},
          {"dataset",
           {{"format", "idx"},
            {"train_images", file("train-images-idx3-ubyte.gz", "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7")},
            {"train_labels", file("train-labels-idx1-ubyte.gz", "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056")},
            {"test_images", file("t10k-images-idx3-ubyte.gz", "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa")},
            {"test_labels", file("t10k-labels-idx1-ubyte.gz", "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05")},
            {"normalize", {{"mean", 0.286}, {"std", 0.353}}}}},
          {"training",
           {{"optimizer", {{"kind", "adam"}, {"lr", 0.003}}},
            {"schedule", {{"kind", "cosine"}, {"warmup_steps", 5}}},
            {"batch_size", 32},
            {"steps", steps},
            {"grad_clip_norm", 1.0}}},
          {"proof", {{"checkpoint_every", checkpoint_every}}}};
}

std::filesystem::path write_task(const std::filesystem::path& dir, const std::string& name, const nlohmann::json& task) {
  const auto path = dir / (name + ".json");
  write_text(path, task.dump(2));
  return path;
}

CommandResult run_solver(const std::vector<std::string>& arguments) {
  std::vector<std::string> argv{solver_binary().string()};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  CommandResult result = run_command(argv);
  UNSCOPED_INFO("solver exited " << result.exit_code << "; output:\n" << result.output);
  return result;
}

std::filesystem::path make_key(const std::filesystem::path& dir) {
  const auto path = dir / "solver.key";
  const CommandResult result = run_solver({"keygen", "--key", path.string()});
  REQUIRE(result.exit_code == 0);
  return path;
}

nlohmann::json read_json(const std::filesystem::path& path) { return nlohmann::json::parse(read_file(path)); }

}  // namespace solver::test
