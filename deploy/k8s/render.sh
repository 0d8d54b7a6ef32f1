#!/usr/bin/env bash
# Renders every overlay of deploy/k8s (standalone-monitored aside, see below) and validates the result offline
# (no cluster):
#   1. renders each overlay with `kubectl kustomize` (kustomize v4+; anyone deploying to Kubernetes has it);
#   2. validate/validate.mjs: Kubernetes schemas (npm kubernetes-models 4.x), unknown fields, samplerd's wiring
#      rules, plus its self-test (broken variants of each render must be rejected);
#   3. with a built samplerd: every flag in the manifests must be in `samplerd --help`, and samplerd started
#      with each overlay's rendered args (addresses moved to loopback) must come up and list the profiles of
#      the rendered ConfigMap.
# Renders go to ${DEPLOY_BUILD_DIR:-build-deploy}/k8s/<overlay>.yaml.
#
#   deploy/k8s/render.sh     (SAMPLERD_BIN=path/to/samplerd, default build/service/samplerd;
#                             KUBECTL=path/to/kubectl, default the kubectl on PATH)
#
# Not Debian's kubernetes-client: it is kubectl 1.20 with kustomize v2.0.3, which predates directories in
# `resources` and the `patches` field, and silently ignores `$patch: delete` on autoscaling/v2 and policy/v1
# objects. A machine without a current kubectl fails here, saying so.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${DEPLOY_BUILD_DIR:-build-deploy}/k8s
samplerd=${SAMPLERD_BIN:-build/service/samplerd}
tools=deploy/k8s/validate
mkdir -p "$out"
rm -f "$out"/*.yaml "$out"/*.json "$out"/*.args "$out"/*.log

# --- tools: node + the two npm packages (versions pinned by package-lock.json) -------------------------------
if ! command -v node > /dev/null || ! command -v npm > /dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  command -v node > /dev/null || $SUDO apt-get install -y -qq --no-install-recommends nodejs > /dev/null
  command -v npm > /dev/null || $SUDO apt-get install -y -qq --no-install-recommends npm > /dev/null
fi
stamp="$tools/node_modules/.samplerd-lock"
if ! cmp -s "$tools/package-lock.json" "$stamp" 2>/dev/null; then
  (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error > /dev/null)
  cp "$tools/package-lock.json" "$stamp"
fi

kubectl=${KUBECTL:-kubectl}
if ! command -v "$kubectl" > /dev/null; then
  echo "render: FAIL: kubectl not found (KUBECTL=$kubectl): install kubectl 1.21+ (kustomize v4+), e.g. from" \
    "https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/" >&2
  exit 1
fi
kustomize_version=$("$kubectl" version --client -o json 2>/dev/null | sed -n 's/.*"kustomizeVersion": *"\(.*\)".*/\1/p')
kv=$(sed -n 's/^v\{0,1\}\([0-9]*\).*/\1/p' <<< "$kustomize_version")
if [ -z "$kv" ] || ((kv < 4)); then
  echo "render: FAIL: $kubectl has kustomize '${kustomize_version:-none}'; the overlays need kustomize v4+" \
    "(kubectl 1.21+)" >&2
  exit 1
fi
echo "render: kubectl kustomize (kustomize $kustomize_version)"

# --- 1. render ----------------------------------------------------------------------------------------------
inputs=()
for dir in deploy/k8s/overlays/*/; do
  overlay=$(basename "$dir")
  # Prometheus Operator objects are not Kubernetes kinds kubernetes-models knows: scripts/test-observability.sh
  # renders this overlay, validates them against the operator's schemas and checks the rest equals standalone.
  [ "$overlay" = standalone-monitored ] && continue
  "$kubectl" kustomize "$dir" > "$out/$overlay.yaml"
  echo "render: $overlay: $(grep -c '^kind:' "$out/$overlay.yaml") objects"
  inputs+=("$overlay=$out/$overlay.yaml")
done

# --- 2 and 3. validate ----------------------------------------------------------------------------------------
help_args=()
if [ -x "$samplerd" ]; then
  "$samplerd" --help > "$out/samplerd-help.txt"
  help_args=(--samplerd-help "$out/samplerd-help.txt")
else
  echo "render: note: $samplerd not built; flags in the manifests are not checked against samplerd --help"
fi
node "$tools/validate.mjs" --self-test "${help_args[@]}" "${inputs[@]}"

if [ -x "$samplerd" ]; then
  # Each overlay's samplerd, started here with the exact args of its rendered container: TCP addresses moved
  # to 127.0.0.1:0, the unix sockets (gRPC's and --shm_socket's) and the ConfigMap file mapped into $out. It
  # must start (samplerd refuses bad flag values) and list every profile of the rendered ConfigMap.
  abs_out=$(cd "$out" && pwd)
  for input in "${inputs[@]}"; do
    overlay=${input%%=*}
    (cd "$tools" && node --input-type=module -e '
      import { readFileSync, writeFileSync } from "node:fs";
      import { parseAllDocuments } from "yaml";
      const [render, dir, overlay] = process.argv.slice(1);
      const objs = parseAllDocuments(readFileSync(render, "utf8")).map((d) => d.toJS()).filter(Boolean);
      const pod = objs.filter((o) => o.kind === "Deployment").map((o) => o.spec.template.spec)
        .find((p) => [...(p.initContainers ?? []), ...p.containers].some((c) => /(^|\/)samplerd(:|@|$)/.test(c.image)));
      const c = [...(pod.initContainers ?? []), ...pod.containers].find((x) => /(^|\/)samplerd(:|@|$)/.test(x.image));
      const cm = objs.find((o) => o.kind === "ConfigMap" && o.metadata.name.startsWith("samplerd-profiles"));
      writeFileSync(`${dir}/${overlay}.profiles.json`, cm.data["profiles.json"]);
      const args = c.args.map((a) => String(a)
        .replace(/^0\.0\.0\.0:\d+$/, "127.0.0.1:0")
        .replace(/^unix:(\/\/)?\/.*$/, `unix:${dir}/${overlay}.sock`)
        .replace(/^\/.*\/([^/]+\.sock)$/, (_, name) => `${dir}/${overlay}.${name}`)
        .replace(/^\/etc\/samplerd\/profiles\.json$/, `${dir}/${overlay}.profiles.json`));
      writeFileSync(`${dir}/${overlay}.args`, args.join("\n") + "\n");
    ' "$abs_out/$overlay.yaml" "$abs_out" "$overlay")
    mapfile -t args < "$out/$overlay.args"
    log="$out/$overlay.samplerd.log"
    : > "$log"
    "$samplerd" "${args[@]}" > "$log" 2>&1 &
    spid=$!
    trap 'kill -KILL "$spid" 2>/dev/null || true' EXIT
    port=""
    for _ in $(seq 50); do
      port=$(awk '/^samplerd listening on 127\.0\.0\.1:/ { n = split($NF, a, ":"); print a[n]; exit }' "$log" || true)
      [ -n "$port" ] && break
      kill -0 "$spid" 2>/dev/null || break
      sleep 0.1
    done
    listed=""
    [ -n "$port" ] && listed=$(/usr/bin/python3 tests/scaleout/driver.py profiles --target "127.0.0.1:$port" 2>&1 || true)
    sock_ok=1
    sock=$(sed -n 's/^unix:\(\/\/\)\{0,1\}//p' "$out/$overlay.args" | head -1)
    if [ -n "$sock" ] && [ -n "$port" ]; then
      /usr/bin/python3 tests/scaleout/driver.py health --target "unix:$sock" --wait 5 > /dev/null 2>&1 || sock_ok=0
    fi
    kill -TERM "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    trap - EXIT
    if [ -z "$port" ]; then
      echo "render: FAIL: $overlay: samplerd did not start with the rendered args: $(tr '\n' ' ' < "$out/$overlay.args")" >&2
      cat "$log" >&2; exit 1
    fi
    ((sock_ok)) || { echo "render: FAIL: $overlay: health over the rendered unix socket ($sock) failed" >&2; exit 1; }
    want=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).profiles.map((p) => p.name).join(" "))' "$out/$overlay.profiles.json")
    for p in $want; do
      grep -qx "$p" <<< "$listed" || {
        echo "render: FAIL: $overlay: samplerd with the rendered ConfigMap does not list profile $p" >&2
        cat "$log" >&2; echo "$listed" >&2; exit 1; }
    done
    echo "render: $overlay: samplerd starts with the rendered args${sock:+ (health SERVING on its unix socket)} and lists the ConfigMap's profiles: $want"
  done
fi
echo "render: ${inputs[*]%%=*} rendered and valid ($out); standalone-monitored is checked by scripts/test-observability.sh"
