// Validates the Prometheus Operator objects of deploy/observability/prometheus-operator offline against the
// operator's CRD schemas (npm @kubernetes-models/prometheus-operator), then checks that broken variants are
// rejected, so a validator that accepts everything fails.
//
//   node validate.mjs ../prometheus-operator        (after `npm ci` here)
//   node validate.mjs ../prometheus-operator --render MONITORED.yaml --base STANDALONE.yaml
//
// With --render (`kubectl kustomize` of an overlay that includes the component) it validates the operator
// objects of that render instead of the component's files, and checks that the ServiceMonitor selects a
// Service of the render in its namespace whose port it names leads to a named port of the pods that Service
// selects; with --base, that the render without the operator objects equals BASE (an overlay's render
// without the component), so the rest is what deploy/k8s/render.sh validated.
//
// Exit status 1 on any error.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { parse, parseAllDocuments } from "yaml";

const require = createRequire(import.meta.url);
const PACKAGE = "@kubernetes-models/prometheus-operator";
const VERSION = require(`${PACKAGE}/package.json`).version;

// The package is ES modules only: each API group version is imported once, up front.
const modules = {};
for (const apiVersion of ["monitoring.coreos.com/v1"]) modules[apiVersion] = await import(`${PACKAGE}/${apiVersion}`);

function errorsOf(obj) {
  const Model = modules[obj.apiVersion]?.[obj.kind];
  if (typeof Model !== "function") return [`no schema for ${obj.apiVersion} ${obj.kind}`];
  try {
    new Model(obj).validate();
    return [];
  } catch (e) {
    return (e.errors ?? [{ instancePath: "", message: e.message }]).map((x) => `${x.instancePath || "/"} ${x.message}`);
  }
}

const [dir, ...opts] = process.argv.slice(2);
const option = (name) => { const i = opts.indexOf(name); return i < 0 ? null : opts[i + 1]; };
const renderPath = option("--render"), basePath = option("--base");
if (!dir || opts.length !== (renderPath ? 2 : 0) + (basePath ? 2 : 0) || (basePath && !renderPath)) {
  console.error("usage: node validate.mjs COMPONENT_DIR [--render RENDER.yaml [--base BASE.yaml]]");
  process.exit(2);
}
const isOperatorObject = (o) => String(o.apiVersion).startsWith("monitoring.coreos.com/");
function load(path) {
  return parseAllDocuments(readFileSync(path, "utf8")).map((d) => {
    if (d.errors.length) throw new Error(`${path}: ${d.errors[0].message}`);
    return d.toJS();
  }).filter((o) => o != null);
}

// Errors of the ServiceMonitor's wiring within `rendered`: namespace, Service labels, Service port, and the
// named container port that port's targetPort points at.
function selectionErrors(rendered) {
  const errors = [];
  const matches = (selector, labels) => Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);
  for (const m of rendered.filter((o) => o.kind === "ServiceMonitor")) {
    const namespaces = m.spec.namespaceSelector?.matchNames ?? [m.metadata.namespace];
    const services = rendered.filter((o) => o.kind === "Service" && namespaces.includes(o.metadata.namespace) &&
                                            matches(m.spec.selector.matchLabels, o.metadata.labels));
    if (!services.length) { errors.push(`ServiceMonitor/${m.metadata.name}: selects no Service of the render`); continue; }
    for (const e of m.spec.endpoints) {
      for (const svc of services) {
        const port = svc.spec.ports.find((p) => p.name === e.port);
        if (!port) { errors.push(`ServiceMonitor/${m.metadata.name}: Service/${svc.metadata.name} has no port ${e.port}`); continue; }
        const pods = rendered.filter((o) => o.kind === "Deployment" && o.metadata.namespace === svc.metadata.namespace &&
                                            matches(svc.spec.selector, o.spec.template.metadata.labels));
        const named = pods.some((d) => d.spec.template.spec.containers.some((c) =>
          (c.ports ?? []).some((p) => p.name === port.targetPort || p.containerPort === port.targetPort)));
        if (!named) errors.push(`ServiceMonitor/${m.metadata.name}: Service/${svc.metadata.name} port ${e.port} ` +
                                `targets ${port.targetPort}, which no container of its pods exposes`);
      }
    }
  }
  return errors;
}
const kustomization = parse(readFileSync(join(dir, "kustomization.yaml"), "utf8"));
let failed = 0;
if (kustomization.kind !== "Component" || kustomization.apiVersion !== "kustomize.config.k8s.io/v1alpha1") {
  console.error(`${dir}/kustomization.yaml: not a kustomize Component`);
  failed++;
}
const objects = [];
let rendered = null;
if (renderPath) {
  rendered = load(renderPath);
  for (const obj of rendered.filter(isOperatorObject)) {
    objects.push(obj);
    const errors = errorsOf(obj);
    for (const e of errors) console.error(`${renderPath}: ${obj.kind}/${obj.metadata?.name}: ${e}`);
    failed += errors.length;
    if (!errors.length) console.log(`ok: ${renderPath}: ${obj.kind}/${obj.metadata?.name} (${PACKAGE} ${VERSION})`);
  }
  const errors = selectionErrors(rendered);
  for (const e of errors) console.error(`${renderPath}: ${e}`);
  failed += errors.length;
  if (!errors.length) console.log(`ok: ${renderPath}: the ServiceMonitor selects the rendered Service and its port`);
  if (basePath) {
    const key = (o) => `${o.kind}/${o.metadata?.namespace}/${o.metadata?.name}`;
    const canon = (objs) => JSON.stringify(objs.map((o) => [key(o), o]).sort(([a], [b]) => a.localeCompare(b)));
    if (canon(rendered.filter((o) => !isOperatorObject(o))) !== canon(load(basePath))) {
      console.error(`${renderPath}: without the operator objects it differs from ${basePath}`);
      failed++;
    } else console.log(`ok: ${renderPath}: the rest equals ${basePath}`);
  }
}
for (const file of renderPath ? [] : kustomization.resources ?? []) {
  for (const doc of parseAllDocuments(readFileSync(join(dir, file), "utf8"))) {
    if (doc.errors.length) {
      console.error(`${file}: ${doc.errors[0].message}`);
      failed++;
      continue;
    }
    const obj = doc.toJSON();
    if (!obj) continue;
    objects.push(obj);
    const errors = errorsOf(obj);
    for (const e of errors) console.error(`${file}: ${obj.kind}/${obj.metadata?.name}: ${e}`);
    failed += errors.length;
    if (!errors.length) console.log(`ok: ${file}: ${obj.kind}/${obj.metadata?.name} (${PACKAGE} ${VERSION})`);
  }
}
const kinds = objects.map((o) => o.kind).sort().join(",");
if (kinds !== "PrometheusRule,ServiceMonitor") {
  console.error(`expected one ServiceMonitor and one PrometheusRule, got ${kinds}`);
  failed++;
}

// Self-test: each variant must be rejected.
const variants = {
  "ServiceMonitor endpoint port as a number": (o) => o.kind === "ServiceMonitor" && (o.spec.endpoints[0].port = 9464),
  "ServiceMonitor interval not a duration": (o) => o.kind === "ServiceMonitor" && (o.spec.endpoints[0].interval = "fast"),
  "PrometheusRule group without a name": (o) => o.kind === "PrometheusRule" && delete o.spec.groups[0].name,
  "PrometheusRule rule without expr": (o) => o.kind === "PrometheusRule" && delete o.spec.groups[0].rules[0].expr,
};
// With a render, each must make selectionErrors() report.
const wiringVariants = {
  "ServiceMonitor selecting other labels": (objs) => {
    objs.find((o) => o.kind === "ServiceMonitor").spec.selector.matchLabels = { "app.kubernetes.io/name": "other" }; },
  "ServiceMonitor in another namespace": (objs) => { objs.find((o) => o.kind === "ServiceMonitor").metadata.namespace = "other"; },
  "ServiceMonitor on a port the Service lacks": (objs) => {
    objs.find((o) => o.kind === "ServiceMonitor").spec.endpoints[0].port = "http-metrics"; },
  "Service metrics port targeting no container port": (objs) => {
    objs.find((o) => o.kind === "Service").spec.ports.find((p) => p.name === "metrics").targetPort = "prom"; },
};
for (const [name, breakIt] of rendered ? Object.entries(wiringVariants) : []) {
  const copy = structuredClone(rendered);
  breakIt(copy);
  if (!selectionErrors(copy).length) {
    console.error(`self-test: the wiring check accepted a broken variant: ${name}`);
    failed++;
  }
}
for (const [name, breakIt] of Object.entries(variants)) {
  const rejected = objects.some((o) => {
    const copy = structuredClone(o);
    return breakIt(copy) !== false && errorsOf(copy).length > 0;
  });
  if (!rejected) {
    console.error(`self-test: the schema accepted a broken variant: ${name}`);
    failed++;
  }
}
if (failed) process.exit(1);
const rejected = Object.keys(variants).length + (rendered ? Object.keys(wiringVariants).length : 0);
console.log(`ok: ${objects.length} objects valid, ${rejected} broken variants rejected`);
