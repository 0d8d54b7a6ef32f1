#include "tests/service/test_certificates.h"

#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace samplerd::testing {

TempDir::TempDir() {
  char pattern[] = "/tmp/samplerd-test-XXXXXX";
  path_ = mkdtemp(pattern) != nullptr ? pattern : "";
}

TempDir::~TempDir() {
  if (!path_.empty()) std::filesystem::remove_all(path_);
}

std::string ReadTextFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

bool MakeCertificates(const TempDir& dir) {
  const std::string script = R"(set -e
cd ")" + dir.File("") + R"("
ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=$1" \
         -keyout "$1.key" -out "$1.pem"; }
leaf() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$1" -keyout "$1.key" -out "$1.csr"
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 2 -extfile "$1.ext" -out "$1.pem"
}
ca ca
ca other-ca
leaf server ca "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
leaf client ca "extendedKeyUsage=clientAuth"
leaf rogue other-ca "extendedKeyUsage=clientAuth"
)";
  std::ofstream(dir.File("make-certs.sh")) << script;
  const std::string command = "sh " + dir.File("make-certs.sh") + " > " + dir.File("openssl.log") + " 2>&1";
  if (std::system(command.c_str()) != 0) {
    std::fprintf(stderr, "openssl failed:\n%s\n", ReadTextFile(dir.File("openssl.log")).c_str());
    return false;
  }
  return true;
}

}  // namespace samplerd::testing
