// What a cheating solver does after editing a bundle, shared by the proof and e2e tests:
// make every recorded hash, size, update distance, task hash and chain link match the files
// again, and sign with a key it holds. Only the checks that do not trust the manifest
// (seeded data order, schedule, initialisation, replay) can then catch the forgery.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "common/keys.h"
#include "proof/manifest.h"

namespace solver::test {

// Updates `manifest` from the files in `dir`, sets its key to `key`'s, and writes it signed.
void reseal_bundle(const std::filesystem::path& dir, proof::Manifest& manifest, const SigningKey& key);
// The last part of reseal_bundle, reading no file: recomputes the chain from the hashes the
// manifest records, sets its key to `key`'s, and writes it signed. For forgeries solver's own
// reader refuses (so their update distances cannot be recomputed), and for manifests that list
// one file many times.
void rechain_and_sign(const std::filesystem::path& dir, proof::Manifest& manifest, const SigningKey& key);

// The safetensors file `bytes` with `entry` (a header entry as JSON text, "\"name\":{...}") put
// first in its header, the header re-padded and its length rewritten. With a name the header
// already has, the file names that tensor twice; a parser that keeps the last value of a
// repeated key sees the original file.
std::vector<std::byte> with_header_entry(std::span<const std::byte> bytes, const std::string& entry);

}  // namespace solver::test
