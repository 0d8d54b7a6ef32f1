// Validates rendered Kubernetes manifests of samplerd offline, in three layers:
//   1. schema: every object against the Kubernetes OpenAPI schemas compiled into kubernetes-models 4.x;
//   2. unknown fields: those schemas accept fields they do not define (a typo such as `readinesProbe` passes),
//      so each object is validated a second time through a Proxy that records which fields the schema
//      validator reads; a field it never read is one the schema does not know;
//   3. wiring: samplerd's own rules (gRPC probes on the port bound to 0.0.0.0, grace period >= preStop +
//      drain, only flags `samplerd --help` lists, headless h2c Service, HPA and PDB that select real pods,
//      native sidecar and its memory-backed socket volume, ...).
//
//   node validate.mjs [--samplerd-help HELP.txt] [--self-test] OVERLAY=RENDERED.yaml ...
//
// OVERLAY is `standalone` or `sidecar` (what the render must contain) or `any`. --self-test also checks that
// each layer rejects a set of broken variants of the given renders (so a validator that accepts everything
// fails). Exit status 1 on any error.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { parseAllDocuments } from "yaml";

const require = createRequire(import.meta.url);
const MODELS_VERSION = require("kubernetes-models/package.json").version;

// ---- layer 1 and 2 ---------------------------------------------------------------------------------------

function modelClass(obj) {
  if (typeof obj?.apiVersion !== "string" || typeof obj?.kind !== "string") return null;
  let mod;
  try {
    mod = require(`kubernetes-models/${obj.apiVersion}`);
  } catch {
    return null;
  }
  return typeof mod[obj.kind] === "function" ? mod[obj.kind] : null;
}

function schemaErrors(obj, Model) {
  try {
    new Model(obj).validate();
    return [];
  } catch (e) {
    return (e.errors ?? [{ instancePath: "", message: e.message }]).map(
      (x) => `schema: ${x.instancePath || "/"} ${x.message}${x.params?.allowedValues ? ` (${x.params.allowedValues.join(", ")})` : ""}`);
  }
}

// Runs the schema validator over a Proxy of `obj` and returns the paths of fields it never read.
function unknownFields(obj, Model) {
  const read = new WeakMap(); // original object -> Set of keys read
  const proxies = new WeakMap();
  const wrap = (target) => {
    if (target === null || typeof target !== "object") return target;
    if (proxies.has(target)) return proxies.get(target);
    read.set(target, new Set());
    const p = new Proxy(target, {
      get(t, key, receiver) {
        if (typeof key === "string") read.get(t).add(key);
        return wrap(Reflect.get(t, key, receiver));
      },
      has(t, key) {
        if (typeof key === "string") read.get(t).add(key);
        return Reflect.has(t, key);
      },
      getOwnPropertyDescriptor(t, key) {
        if (typeof key === "string") read.get(t).add(key);
        return Reflect.getOwnPropertyDescriptor(t, key);
      },
    });
    proxies.set(target, p);
    return p;
  };
  try {
    Model.prototype.validate.call(wrap(obj));
  } catch {
    // Schema errors are reported by schemaErrors; only the reads matter here.
  }
  const unknown = [];
  const walk = (node, path) => {
    if (node === null || typeof node !== "object") return;
    const keys = read.get(node);
    if (Array.isArray(node)) {
      node.forEach((v, i) => walk(v, `${path}/${i}`));
      return;
    }
    for (const [k, v] of Object.entries(node)) {
      if (!keys || !keys.has(k)) unknown.push(`${path}/${k}`);
      else walk(v, `${path}/${k}`);
    }
  };
  walk(obj, "");
  return unknown;
}

// ---- layer 3 ---------------------------------------------------------------------------------------------

function labelsMatch(selector, labels) {
  return selector && Object.keys(selector).length > 0 &&
    Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

function isSamplerdImage(image) {
  const repo = (image ?? "").split("@")[0].replace(/:[^:/]*$/, "");
  return repo.split("/").pop() === "samplerd";
}

// Returns {flag: value} for a samplerd argument list (`--flag value` or `--flag=value`; repeated flags keep
// every value in an array).
function parseArgs(args) {
  const flags = {};
  for (let i = 0; i < (args ?? []).length; i++) {
    const a = String(args[i]);
    if (!a.startsWith("--")) continue;
    let name = a.slice(2), value;
    if (name.includes("=")) [name, value] = [name.slice(0, name.indexOf("=")), name.slice(name.indexOf("=") + 1)];
    else if (i + 1 < args.length && !String(args[i + 1]).startsWith("--")) value = String(args[++i]);
    (flags[name] ??= []).push(value);
  }
  return flags;
}

function preStopSeconds(c) {
  const h = c.lifecycle?.preStop;
  if (!h) return null;
  if (h.sleep) return Number(h.sleep.seconds);
  const cmd = h.exec?.command ?? [];
  const i = cmd.findIndex((x) => /(^|\/)sleep$/.test(x));
  return i >= 0 ? Number(cmd[i + 1]) : 0;
}

function checkWiring(objects, expect, helpFlags) {
  const errors = [];
  const id = (o) => `${o.kind}/${o.metadata?.name}`;
  const err = (o, msg) => errors.push(`${id(o)}: ${msg}`);
  const byKind = (k) => objects.filter((o) => o.kind === k);
  const deployments = byKind("Deployment");
  const configMaps = new Map(byKind("ConfigMap").map((o) => [o.metadata.name, o]));

  // One namespace, created by the render itself.
  const namespaces = new Set(objects.filter((o) => o.kind !== "Namespace").map((o) => o.metadata?.namespace));
  if (namespaces.size !== 1 || namespaces.has(undefined)) {
    errors.push(`objects are spread over namespaces ${[...namespaces].join(", ")}: expected one`);
  } else if (!byKind("Namespace").some((n) => namespaces.has(n.metadata.name))) {
    errors.push(`no Namespace object for ${[...namespaces][0]}`);
  }

  let samplerdContainers = 0, nativeSidecars = 0;
  for (const d of deployments) {
    const spec = d.spec?.template?.spec ?? {};
    const podLabels = d.spec?.template?.metadata?.labels;
    if (!labelsMatch(d.spec?.selector?.matchLabels, podLabels)) err(d, "selector.matchLabels do not all appear in the pod labels");
    const volumes = new Map((spec.volumes ?? []).map((v) => [v.name, v]));
    for (const v of spec.volumes ?? []) {
      if (v.configMap && !configMaps.has(v.configMap.name)) err(d, `volume ${v.name} names ConfigMap ${v.configMap.name}, which the render does not contain`);
    }
    const all = [...(spec.initContainers ?? []).map((c) => [c, true]), ...(spec.containers ?? []).map((c) => [c, false])];
    for (const [c, init] of all) {
      const where = `${init ? "initContainer" : "container"} ${c.name}`;
      const sc = c.securityContext ?? {};
      if (!(sc.runAsNonRoot ?? spec.securityContext?.runAsNonRoot)) err(d, `${where}: runAsNonRoot is not set`);
      if (sc.readOnlyRootFilesystem !== true) err(d, `${where}: readOnlyRootFilesystem is not true`);
      if (sc.allowPrivilegeEscalation !== false) err(d, `${where}: allowPrivilegeEscalation is not false`);
      if (!(sc.capabilities?.drop ?? []).includes("ALL")) err(d, `${where}: capabilities do not drop ALL`);
      if (!c.resources?.requests?.cpu || !c.resources?.requests?.memory || !c.resources?.limits?.memory) {
        err(d, `${where}: needs cpu and memory requests and a memory limit`);
      }
      if (!isSamplerdImage(c.image)) continue;

      samplerdContainers++;
      const flags = parseArgs(c.args);
      if (c.command) err(d, `${where}: overrides the image's entrypoint (command); pass flags in args`);
      if (helpFlags) {
        for (const f of Object.keys(flags)) {
          if (!helpFlags.has(f)) err(d, `${where}: samplerd has no flag --${f} (samplerd --help)`);
        }
      }
      const listens = flags.listen ?? [];
      const tcp = listens.map((l) => /^0\.0\.0\.0:(\d+)$/.exec(l ?? "")).filter(Boolean).map((m) => Number(m[1]));
      const grpcPort = (c.ports ?? []).find((p) => p.name === "grpc");
      if (tcp.length !== 1) err(d, `${where}: needs exactly one --listen 0.0.0.0:PORT (the kubelet probes the pod IP), has ${JSON.stringify(listens)}`);
      else if (!grpcPort || grpcPort.containerPort !== tcp[0]) err(d, `${where}: port 'grpc' must be ${tcp[0]}, the port of --listen`);
      for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const p = c[probe];
        if (!p?.grpc) err(d, `${where}: ${probe} must be a gRPC probe`);
        else if (tcp.length === 1 && p.grpc.port !== tcp[0]) err(d, `${where}: ${probe} probes port ${p.grpc.port}, not the --listen port ${tcp[0]}`);
      }
      const metrics = (c.ports ?? []).find((p) => p.name === "metrics");
      if (!metrics || metrics.containerPort !== 9464) err(d, `${where}: port 'metrics' must be 9464`);
      const metricsListen = (flags.metrics_listen ?? [])[0];
      if (metricsListen !== undefined && metricsListen !== "0.0.0.0:9464") {
        err(d, `${where}: --metrics_listen ${metricsListen}: Prometheus scrapes the pod IP on port 'metrics', so 0.0.0.0:9464`);
      }
      const metricsPort = (flags.metrics_port ?? [])[0];
      if (metricsPort !== undefined && metricsPort !== "9464") {
        err(d, `${where}: --metrics_port ${metricsPort}: Prometheus scrapes port 'metrics', so 9464`);
      }
      const drain = Number((flags.drain_seconds ?? [])[0] ?? 10);
      const pause = preStopSeconds(c);
      const grace = spec.terminationGracePeriodSeconds ?? 30;
      if (!pause) err(d, `${where}: needs a preStop pause (lifecycle.preStop.sleep)`);
      if (grace < (pause ?? 0) + drain) err(d, `terminationGracePeriodSeconds ${grace} < preStop ${pause} s + --drain_seconds ${drain}`);
      const ageGrace = (flags.max_connection_age_grace_seconds ?? [])[0];
      if (ageGrace !== undefined && Number(ageGrace) < drain) {
        err(d, `${where}: --max_connection_age_grace_seconds ${ageGrace} < --drain_seconds ${drain} (samplerd refuses to start)`);
      }

      const config = (flags.config ?? [])[0];
      if (config) {
        const dir = config.slice(0, config.lastIndexOf("/"));
        const mount = (c.volumeMounts ?? []).find((m) => m.mountPath === dir);
        const cm = mount && configMaps.get(volumes.get(mount.name)?.configMap?.name);
        const file = config.slice(config.lastIndexOf("/") + 1);
        if (!cm) err(d, `${where}: --config ${config} is not in a mounted ConfigMap`);
        else if (typeof cm.data?.[file] !== "string") err(d, `${where}: ConfigMap ${cm.metadata.name} has no key ${file}`);
        else {
          try {
            const set = JSON.parse(cm.data[file]);
            if (!Array.isArray(set.profiles) || set.profiles.some((p) => !p.name)) err(d, `${file}: 'profiles' must be a list of named profiles`);
          } catch (e) {
            err(d, `${file} is not JSON: ${e.message}`);
          }
        }
      }

      if (init) {
        if (c.restartPolicy !== "Always") err(d, `${where}: samplerd as an init container must be a native sidecar (restartPolicy: Always)`);
        else nativeSidecars++;
      }
      for (const l of listens) {
        const m = /^unix:(?:\/\/)?(\/.+)$/.exec(l ?? "");
        if (!m) continue;
        const socket = m[1], dir = socket.slice(0, socket.lastIndexOf("/"));
        const mount = (c.volumeMounts ?? []).find((v) => v.mountPath === dir);
        const vol = mount && volumes.get(mount.name);
        if (!vol?.emptyDir) err(d, `${where}: socket ${socket} is not on an emptyDir volume`);
        else if (vol.emptyDir.medium !== "Memory") err(d, `${where}: the socket's emptyDir must have medium: Memory`);
        const users = (spec.containers ?? []).filter((o) => o !== c &&
          (o.volumeMounts ?? []).some((v) => v.name === mount?.name && v.mountPath === dir) &&
          (o.env ?? []).some((e) => e.value === `unix://${socket}` || e.value === `unix:${socket}`));
        if (!users.length) err(d, `${where}: no container mounts ${dir} and is given the target unix://${socket}`);
      }
    }
  }

  for (const s of byKind("Service")) {
    const pods = deployments.filter((d) => labelsMatch(s.spec?.selector, d.spec?.template?.metadata?.labels));
    if (!pods.length) { err(s, "selects no Deployment's pods"); continue; }
    const containers = pods.flatMap((d) => [...(d.spec.template.spec.containers ?? []), ...(d.spec.template.spec.initContainers ?? [])]);
    if (!containers.some((c) => isSamplerdImage(c.image))) continue;
    if (s.spec.clusterIP !== "None") err(s, "must be headless (clusterIP: None) for client-side round_robin");
    const grpc = (s.spec.ports ?? []).find((p) => p.name === "grpc");
    if (!grpc) err(s, "has no port named grpc");
    else if (grpc.appProtocol !== "kubernetes.io/h2c") err(s, "port grpc needs appProtocol: kubernetes.io/h2c");
    for (const p of s.spec.ports ?? []) {
      const t = p.targetPort ?? p.port;
      const ok = containers.some((c) => (c.ports ?? []).some((cp) => cp.name === t || cp.containerPort === t));
      if (!ok) err(s, `port ${p.name}: targetPort ${t} is no container port of the selected pods`);
    }
  }

  for (const h of byKind("HorizontalPodAutoscaler")) {
    const ref = h.spec?.scaleTargetRef ?? {};
    const target = deployments.find((d) => ref.kind === "Deployment" && d.metadata.name === ref.name);
    if (!target) { err(h, `scaleTargetRef ${ref.kind}/${ref.name} is not in the render`); continue; }
    const cpu = (h.spec.metrics ?? []).find((m) => m.type === "Resource" && m.resource?.name === "cpu" &&
                                                  m.resource?.target?.type === "Utilization");
    if (!cpu) err(h, "needs a CPU utilisation metric");
    if ((h.spec.minReplicas ?? 1) < 2) err(h, "minReplicas < 2 leaves no replica to fail over to");
    if (target.spec.replicas !== undefined) err(h, `Deployment ${ref.name} sets replicas, which every apply would reset under the HPA`);
    const pdb = byKind("PodDisruptionBudget").find((p) => labelsMatch(p.spec?.selector?.matchLabels, target.spec.template.metadata.labels));
    if (!pdb) err(h, `no PodDisruptionBudget covers the pods of ${ref.name}`);
  }
  for (const p of byKind("PodDisruptionBudget")) {
    if (!deployments.some((d) => labelsMatch(p.spec?.selector?.matchLabels, d.spec?.template?.metadata?.labels))) err(p, "selects no Deployment's pods");
  }

  if (samplerdContainers === 0) errors.push("no container runs the samplerd image");
  if (expect === "standalone") {
    const d = deployments.find((x) => (x.spec.template.spec.containers ?? []).some((c) => isSamplerdImage(c.image)));
    if (!d) errors.push("standalone: no Deployment runs samplerd as a container");
    for (const k of ["Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"]) {
      if (!byKind(k).length) errors.push(`standalone: no ${k}`);
    }
  } else if (expect === "sidecar") {
    if (nativeSidecars === 0) errors.push("sidecar: no pod runs samplerd as a native sidecar");
    if (deployments.some((x) => (x.spec.template.spec.containers ?? []).some((c) => isSamplerdImage(c.image)))) {
      errors.push("sidecar: a standalone samplerd Deployment is left in the render");
    }
  }
  return errors;
}

// ---- driver ----------------------------------------------------------------------------------------------

export function validateObjects(objects, expect, helpFlags) {
  const errors = [];
  for (const [i, obj] of objects.entries()) {
    const where = `${obj?.kind ?? "?"}/${obj?.metadata?.name ?? `#${i}`}`;
    const Model = modelClass(obj);
    if (!Model) { errors.push(`${where}: ${obj?.apiVersion} ${obj?.kind} is not a Kubernetes kind kubernetes-models knows`); continue; }
    for (const e of schemaErrors(obj, Model)) errors.push(`${where}: ${e}`);
    for (const f of unknownFields(obj, Model)) errors.push(`${where}: unknown field ${f}`);
  }
  if (!errors.length) errors.push(...checkWiring(objects, expect, helpFlags));
  return errors;
}

function load(path) {
  return parseAllDocuments(readFileSync(path, "utf8")).map((d) => {
    if (d.errors.length) throw new Error(`${path}: ${d.errors[0].message}`);
    return d.toJS();
  }).filter((o) => o != null);
}

function helpFlagsFrom(path) {
  const flags = new Set();
  for (const m of readFileSync(path, "utf8").matchAll(/(?:^|[\s,])--([a-z][a-z0-9_-]*)/g)) flags.add(m[1]);
  if (!flags.has("listen")) throw new Error(`${path} does not look like samplerd --help (no --listen)`);
  return flags;
}

// Broken variants of a good render, each of which one layer must reject with a message matching `expect`.
const MUTATIONS = [
  ["typo in a field name", "unknown field .*readinesProbe", (objs) => {
    const c = samplerdContainer(objs); c.readinesProbe = c.readinessProbe; delete c.readinessProbe; }],
  ["wrong type", "schema: .*containerPort must be integer", (objs) => { samplerdContainer(objs).ports[0].containerPort = "50051"; }],
  ["bad enum value", "schema: .*imagePullPolicy", (objs) => { samplerdContainer(objs).imagePullPolicy = "Sometimes"; }],
  ["TCP probe instead of gRPC", "startupProbe must be a gRPC probe", (objs) => {
    const c = samplerdContainer(objs); c.startupProbe = { tcpSocket: { port: 50051 } }; }],
  ["probe on another port", "livenessProbe probes port 50052", (objs) => { samplerdContainer(objs).livenessProbe.grpc.port = 50052; }],
  ["listening on loopback only", "--listen 0.0.0.0:PORT", (objs) => {
    const c = samplerdContainer(objs); c.args = c.args.map((a) => a.replace("0.0.0.0:", "127.0.0.1:")); }],
  ["flag samplerd does not have", "no flag --metrics_path", (objs) => { samplerdContainer(objs).args.push("--metrics_path", "/m"); }],
  ["grace period shorter than the drain", "terminationGracePeriodSeconds 10 <", (objs) => {
    samplerdPod(objs).terminationGracePeriodSeconds = 10; }],
  ["metrics on another port", "--metrics_port 9100", (objs) => {
    const c = samplerdContainer(objs); const i = c.args.indexOf("--metrics_listen");
    c.args.splice(i, 2, "--metrics_port", "9100"); }],
  ["metrics on loopback", "--metrics_listen 127.0.0.1:9464", (objs) => {
    const c = samplerdContainer(objs); c.args[c.args.indexOf("0.0.0.0:9464")] = "127.0.0.1:9464"; }],
  ["connection-age grace below the drain", "--max_connection_age_grace_seconds 5 <", (objs) => {
    const c = samplerdContainer(objs); c.args[c.args.indexOf("--max_connection_age_grace_seconds") + 1] = "5"; }],
  ["no preStop pause", "needs a preStop pause", (objs) => { delete samplerdContainer(objs).lifecycle; }],
  ["writable root filesystem", "readOnlyRootFilesystem is not true", (objs) => {
    samplerdContainer(objs).securityContext.readOnlyRootFilesystem = false; }],
  ["profiles ConfigMap missing", "names ConfigMap|not in a mounted ConfigMap", (objs) => {
    const i = objs.findIndex((o) => o.kind === "ConfigMap"); objs.splice(i, 1); }],
];
const STANDALONE_MUTATIONS = [
  ["Service with a cluster IP", "must be headless", (objs) => { delete objs.find((o) => o.kind === "Service").spec.clusterIP; }],
  ["Service without h2c", "appProtocol: kubernetes.io/h2c", (objs) => {
    objs.find((o) => o.kind === "Service").spec.ports[0].appProtocol = "grpc"; }],
  ["HPA on a missing Deployment", "scaleTargetRef Deployment/samplerd-typo", (objs) => {
    objs.find((o) => o.kind === "HorizontalPodAutoscaler").spec.scaleTargetRef.name = "samplerd-typo"; }],
  ["PDB selecting nothing", "PodDisruptionBudget/samplerd: selects no", (objs) => {
    objs.find((o) => o.kind === "PodDisruptionBudget").spec.selector.matchLabels = { app: "other" }; }],
];
const SIDECAR_MUTATIONS = [
  ["plain init container", "must be a native sidecar", (objs) => { delete samplerdContainer(objs).restartPolicy; }],
  ["socket on a disk-backed emptyDir", "medium: Memory", (objs) => {
    const v = samplerdPod(objs).volumes.find((x) => x.emptyDir); delete v.emptyDir.medium; }],
  ["model server pointed elsewhere", "given the target unix:///run/samplerd/samplerd.sock", (objs) => {
    const c = samplerdPod(objs).containers[0]; c.env = [{ name: "SAMPLERD_TARGET", value: "unix:///tmp/x.sock" }]; }],
];

function samplerdPod(objs) {
  return objs.find((o) => o.kind === "Deployment" && [...(o.spec.template.spec.containers ?? []),
    ...(o.spec.template.spec.initContainers ?? [])].some((c) => isSamplerdImage(c.image))).spec.template.spec;
}
function samplerdContainer(objs) {
  const s = samplerdPod(objs);
  return [...(s.initContainers ?? []), ...(s.containers ?? [])].find((c) => isSamplerdImage(c.image));
}

function main(argv) {
  let helpFlags = null, selfTest = false;
  const inputs = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--samplerd-help") helpFlags = helpFlagsFrom(argv[++i]);
    else if (argv[i] === "--self-test") selfTest = true;
    else if (/^[a-z]+=/.test(argv[i])) inputs.push(argv[i].split(/=(.*)/s).slice(0, 2));
    else { console.error(`usage: node validate.mjs [--samplerd-help FILE] [--self-test] OVERLAY=FILE ...`); return 2; }
  }
  if (!inputs.length) { console.error("validate: nothing to validate"); return 2; }
  let failed = false;
  for (const [expect, path] of inputs) {
    const objects = load(path);
    const errors = validateObjects(objects, expect, helpFlags);
    if (errors.length) {
      failed = true;
      for (const e of errors) console.error(`validate: ${expect}: ${e}`);
    } else {
      console.log(`validate: ${expect}: ${objects.length} objects (${objects.map((o) => o.kind).join(", ")}) pass the ` +
                  `kubernetes-models ${MODELS_VERSION} schemas, the unknown-field check and the samplerd wiring rules`);
    }
    if (!selfTest) continue;
    const cases = [...MUTATIONS, ...(expect === "standalone" ? STANDALONE_MUTATIONS : []),
                   ...(expect === "sidecar" ? SIDECAR_MUTATIONS : [])];
    if (!helpFlags) cases.splice(cases.findIndex((c) => c[0] === "flag samplerd does not have"), 1);
    let caught = 0;
    for (const [name, pattern, mutate] of cases) {
      const copy = structuredClone(objects);
      mutate(copy);
      const errs = validateObjects(copy, expect, helpFlags);
      if (errs.some((e) => new RegExp(pattern).test(e))) caught++;
      else {
        failed = true;
        console.error(`validate: self-test ${expect}: "${name}" was not rejected as /${pattern}/; errors: ${JSON.stringify(errs)}`);
      }
    }
    console.log(`validate: self-test ${expect}: ${caught}/${cases.length} broken variants rejected`);
  }
  return failed ? 1 : 0;
}

if (import.meta.url === `file://${process.argv[1]}`) process.exit(main(process.argv.slice(2)));
