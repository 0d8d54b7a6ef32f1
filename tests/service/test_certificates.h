// Test certificates made with the openssl command, in a temporary directory removed with the object.
//
// A CA ("ca"), a server certificate for localhost and 127.0.0.1 signed by it ("server"), a client certificate
// signed by it ("client"), and a "rogue" client certificate signed by another CA ("other-ca"). EC P-256 keys:
// quick to make. Each NAME has NAME.pem and NAME.key.
//
//   samplerd::testing::TestCertificates certs;
//   ASSERT_TRUE(certs.ok());
//   ServerProcess::Start({"--tls_cert", certs.File("server.pem"), "--tls_key", certs.File("server.key")});
#ifndef SAMPLERD_TESTS_SERVICE_TEST_CERTIFICATES_H_
#define SAMPLERD_TESTS_SERVICE_TEST_CERTIFICATES_H_

#include <string>

namespace samplerd::testing {

// TempDir
//
// A directory under /tmp removed with everything in it when the object goes away.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string File(const std::string& name) const { return path_ + "/" + name; }
  bool ok() const { return !path_.empty(); }

 private:
  std::string path_;
};

// MakeCertificates()
//
// Writes the certificates above into `dir`; false (with openssl's output on stderr) when openssl failed.
bool MakeCertificates(const TempDir& dir);

// ReadTextFile()
//
// The contents of `path`; empty when it cannot be read.
std::string ReadTextFile(const std::string& path);

}  // namespace samplerd::testing

#endif  // SAMPLERD_TESTS_SERVICE_TEST_CERTIFICATES_H_
