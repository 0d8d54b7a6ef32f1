// Writes the fuzz targets' seed corpora, cut from the golden cases (tests/fuzz/golden_seeds.h):
//
// and the hand-made control packets (ShmControlSeeds):
//
//   make_fuzz_seeds GOLDEN_DIR OUT_DIR     -> OUT_DIR/request/*, OUT_DIR/kernels/*, OUT_DIR/shm_control/*
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/golden_seeds.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s GOLDEN_DIR OUT_DIR\n", argv[0]);
    return 2;
  }
  using samplerd::fuzz::SeedKind;
  for (const auto& [kind, dir] : {std::pair{SeedKind::kRequest, "request"}, std::pair{SeedKind::kKernels, "kernels"}}) {
    absl::StatusOr<std::vector<samplerd::fuzz::Seed>> seeds = samplerd::fuzz::GoldenSeeds(argv[1], kind);
    if (!seeds.ok()) {
      std::fprintf(stderr, "make_fuzz_seeds: %s\n", seeds.status().ToString().c_str());
      return 1;
    }
    const std::filesystem::path out = std::filesystem::path(argv[2]) / dir;
    std::filesystem::create_directories(out);
    for (const samplerd::fuzz::Seed& s : *seeds) {
      std::ofstream(out / s.name, std::ios::binary).write(s.bytes.data(), static_cast<std::streamsize>(s.bytes.size()));
    }
    std::printf("%zu %s seeds in %s\n", seeds->size(), dir, out.c_str());
  }
  const std::vector<std::string> control = samplerd::fuzz::ShmControlSeeds();
  const std::filesystem::path out = std::filesystem::path(argv[2]) / "shm_control";
  std::filesystem::create_directories(out);
  for (size_t i = 0; i < control.size(); ++i) {
    std::ofstream(out / ("seed-" + std::to_string(i)), std::ios::binary)
        .write(control[i].data(), static_cast<std::streamsize>(control[i].size()));
  }
  std::printf("%zu shm_control seeds in %s\n", control.size(), out.c_str());
  return 0;
}
