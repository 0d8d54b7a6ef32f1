// `samplerctl calibrate`: a profile fitted to a model from recorded generations (core/calibration.h).
//
// Reads the metrics of every answered step from one or more records, in either format the project writes:
//   - `samplerctl record` files ("samplerd-rec-v1" header, record_replay.h): every StepResult without an error;
//   - JSON lines of the Python torch host (`generate.py --record`, the evaluation's records): every line with
//     "kind": "step" and a "metrics" object (absent or null metrics count as a step without metrics).
// Then runs core's Calibrate and writes the ProfileSet as protobuf JSON, which `samplerd --config` loads (and a
// SIGHUP reloads) as it is.
//
//   samplerctl calibrate --from gen.rec more.jsonl --out profile.json --base entropix-frog
#ifndef SAMPLERD_CLIENTS_CPP_CALIBRATE_H_
#define SAMPLERD_CLIENTS_CPP_CALIBRATE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/calibration.h"

namespace samplerd::client {

// The metrics of every step in a record file (format detected from its first bytes). INVALID_ARGUMENT naming the
// file (and the line or record) when it cannot be read or parsed.
absl::StatusOr<std::vector<StepMetrics>> ReadRecordMetrics(const std::string& path);

struct CalibrateOptions {
  std::vector<std::string> from;
  std::string out;  // "-" = stdout
  CalibrationOptions calibration;
};

// Returns the exit code: 0 written; 2 an unreadable record or bad input (the reason on stderr), 1 the output
// cannot be written.
int RunCalibrate(const CalibrateOptions& options);

}  // namespace samplerd::client

#endif  // SAMPLERD_CLIENTS_CPP_CALIBRATE_H_
