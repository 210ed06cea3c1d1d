// What a cheating solver does after editing a bundle, shared by the proof and e2e tests:
// make every recorded hash, size, update distance, task hash and chain link match the files
// again, and sign with a key it holds. Only the checks that do not trust the manifest
// (seeded data order, schedule, initialisation, replay) can then catch the forgery.
#pragma once

#include <filesystem>

#include "common/keys.h"
#include "proof/manifest.h"

namespace solver::test {

// Updates `manifest` from the files in `dir`, sets its key to `key`'s, and writes it signed.
void reseal_bundle(const std::filesystem::path& dir, proof::Manifest& manifest, const SigningKey& key);

}  // namespace solver::test
