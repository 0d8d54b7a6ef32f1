// Live samplerd processes for the tests. The binary is $SAMPLERD_BIN, else build/service/samplerd of this
// checkout; a missing binary fails the tests (it never skips them).
import { ChildProcess, spawn } from "child_process";
import { accessSync, constants, mkdtempSync, readFileSync, rmSync } from "fs";
import { join, resolve } from "path";

export const REPO = resolve(__dirname, "..", "..", "..", "..");
// The golden vectors: $SAMPLERD_GOLDEN_DIR (scripts/test-clients.sh passes the build's setting), else tests/golden.
export const GOLDEN = process.env.SAMPLERD_GOLDEN_DIR || resolve(REPO, "tests", "golden");

export function samplerdBinary(): string {
  const bin = process.env.SAMPLERD_BIN ?? join(REPO, "build", "service", "samplerd");
  accessSync(bin, constants.X_OK);
  return bin;
}

export class Samplerd {
  readonly proc: ChildProcess;
  addresses: string[] = [];
  private output = "";
  private exited: Promise<number | null>;

  private constructor(listen: string[], extra: string[]) {
    const args = ["--log_level", "warn", ...extra];
    for (const a of listen) args.push("--listen", a);
    this.proc = spawn(samplerdBinary(), args, { stdio: ["ignore", "pipe", "pipe"] });
    this.proc.stdout!.on("data", (d) => (this.output += d));
    this.proc.stderr!.on("data", (d) => (this.output += d));
    this.exited = new Promise((r) => this.proc.on("exit", (code, signal) => r(code ?? (signal ? -1 : null))));
  }

  static async start(listen: string[] = ["127.0.0.1:0"], extra: string[] = []): Promise<Samplerd> {
    const s = new Samplerd(listen, extra);
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const found = [...s.output.matchAll(/samplerd listening on (\S+)/g)].map((m) => m[1]);
      if (found.length >= listen.length) {
        s.addresses = found;
        return s;
      }
      if (s.proc.exitCode !== null) throw new Error(`samplerd exited with ${s.proc.exitCode}: ${s.output}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    s.proc.kill("SIGKILL");
    throw new Error(`samplerd did not start: ${s.output}`);
  }

  get address(): string {
    return this.addresses[0];
  }

  // Resolves with the exit code (-1 when killed by a signal).
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    return this.exited;
  }
}

// Under /tmp rather than $TMPDIR: the tests put unix sockets here, and a socket's path must fit in sun_path (107
// bytes), which a long $TMPDIR does not leave room for.
export function tempDir(): { path: string; remove: () => void } {
  const path = mkdtempSync("/tmp/sd-");
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export function goldenCases(): any[] {
  return JSON.parse(readFileSync(join(GOLDEN, "cases.json"), "utf8")).cases;
}
