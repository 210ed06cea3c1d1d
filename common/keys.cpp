// Ed25519 signing keys over OpenSSL's EVP interface, stored as PKCS#8 PEM files.
// Invariant: a key file is created with mode 0600 and never overwritten (O_CREAT|O_EXCL), and a
// key file that group or others could read is refused on load: a leaked key signs work in the
// solver's name, so the check stays even though it annoys people who copy keys around.
#include "common/keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

#include "common/error.h"
#include "common/files.h"
#include "common/sha256.h"

namespace solver {
namespace {

constexpr std::size_t kPublicKeyBytes = 32;
constexpr std::size_t kSignatureBytes = 64;

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }
};
struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

// The oldest queued OpenSSL error as text (and clears the queue), for messages.
std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no OpenSSL error recorded";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

[[noreturn]] void fail_openssl(const std::string& what) {
  throw Error(ErrorKind::Internal, what + ": " + openssl_error());
}

std::optional<std::vector<std::uint8_t>> parse_hex(std::string_view text) {
  if (text.size() % 2 != 0) return std::nullopt;
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::vector<std::uint8_t> bytes(text.size() / 2);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const int high = digit(text[2 * i]);
    const int low = digit(text[2 * i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    bytes[i] = static_cast<std::uint8_t>(high * 16 + low);
  }
  return bytes;
}

}  // namespace

struct SigningKey::Impl {
  PkeyPtr key;
};

SigningKey::SigningKey(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SigningKey::SigningKey(SigningKey&&) noexcept = default;
SigningKey& SigningKey::operator=(SigningKey&&) noexcept = default;
SigningKey::~SigningKey() = default;

SigningKey SigningKey::generate() {
  EVP_PKEY* raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (raw == nullptr) fail_openssl("generating an Ed25519 key");
  auto impl = std::make_unique<Impl>();
  impl->key.reset(raw);
  return SigningKey(std::move(impl));
}

SigningKey SigningKey::load(const std::filesystem::path& path) {
  const std::string shown = path.string();
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    if (errno == ENOENT)
      throw Error(ErrorKind::Config, "key file " + shown + " does not exist: create one with `solver keygen`");
    throw Error(ErrorKind::Config, "cannot read key file " + shown + ": " + std::strerror(errno));
  }
  require_private_file(path, "key file");
  const std::string pem = read_file(path);
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) fail_openssl("reading key file " + shown);
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    ERR_clear_error();
    throw Error(ErrorKind::Config, "key file " + shown + " is not a PEM private key: create one with `solver keygen`");
  }
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_ED25519)
    throw Error(ErrorKind::Config, "key file " + shown + " holds a " + EVP_PKEY_get0_type_name(key.get()) +
                                       " key; solver signs with Ed25519 keys: create one with `solver keygen`");
  auto impl = std::make_unique<Impl>();
  impl->key = std::move(key);
  return SigningKey(std::move(impl));
}

void SigningKey::save(const std::filesystem::path& path) const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), impl_->key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
    fail_openssl("encoding the key as PEM");
  char* pem_data = nullptr;
  const long pem_size = BIO_get_mem_data(bio.get(), &pem_data);

  const std::string shown = path.string();
  if (path.has_parent_path()) {
    std::error_code error;
    std::filesystem::create_directories(path.parent_path(), error);
    if (error) throw Error(ErrorKind::Config, "cannot create the folder of key file " + shown + ": " + error.message());
  }
  // O_EXCL: an existing key is an identity with history; replacing it is never a side effect.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST)
      throw Error(ErrorKind::Config, "key file " + shown + " already exists; refusing to overwrite it (move it away first)");
    throw Error(ErrorKind::Config, "cannot create key file " + shown + ": " + std::strerror(errno));
  }
  long written = 0;
  while (written < pem_size) {
    const ssize_t n = ::write(fd, pem_data + written, static_cast<std::size_t>(pem_size - written));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string reason = std::strerror(errno);
      ::close(fd);
      ::unlink(path.c_str());
      throw Error(ErrorKind::Io, "cannot write key file " + shown + ": " + reason);
    }
    written += n;
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced) {
    ::unlink(path.c_str());
    throw Error(ErrorKind::Io, "cannot fsync key file " + shown);
  }
}

std::string SigningKey::public_key_hex() const {
  std::uint8_t bytes[kPublicKeyBytes];
  std::size_t size = sizeof bytes;
  if (EVP_PKEY_get_raw_public_key(impl_->key.get(), bytes, &size) != 1 || size != kPublicKeyBytes)
    fail_openssl("reading the Ed25519 public key");
  return to_hex(bytes);
}

std::string SigningKey::sign_hex(std::string_view message) const {
  MdCtxPtr context(EVP_MD_CTX_new());
  if (!context || EVP_DigestSignInit(context.get(), nullptr, nullptr, nullptr, impl_->key.get()) != 1)
    fail_openssl("starting an Ed25519 signature");
  std::uint8_t signature[kSignatureBytes];
  std::size_t size = sizeof signature;
  if (EVP_DigestSign(context.get(), signature, &size, reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1 ||
      size != kSignatureBytes)
    fail_openssl("signing with Ed25519");
  return to_hex(signature);
}

bool verify_signature(std::string_view public_key_hex, std::string_view message, std::string_view signature_hex) {
  try {
    const auto public_key = parse_hex(public_key_hex);
    const auto signature = parse_hex(signature_hex);
    if (!public_key || public_key->size() != kPublicKeyBytes || !signature || signature->size() != kSignatureBytes)
      return false;
    PkeyPtr key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, public_key->data(), public_key->size()));
    MdCtxPtr context(EVP_MD_CTX_new());
    const bool valid = key && context &&
                       EVP_DigestVerifyInit(context.get(), nullptr, nullptr, nullptr, key.get()) == 1 &&
                       EVP_DigestVerify(context.get(), signature->data(), signature->size(),
                                        reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
    ERR_clear_error();  // a failed verification leaves errors queued that would confuse later messages
    return valid;
  } catch (...) {  // allocation failure: a signature we cannot check is not a valid one
    return false;
  }
}

}  // namespace solver
