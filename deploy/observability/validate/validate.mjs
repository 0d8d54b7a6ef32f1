// Validates the Prometheus Operator objects of deploy/observability/prometheus-operator offline against the
// operator's CRD schemas (npm @kubernetes-models/prometheus-operator), then checks that broken variants are
// rejected, so a validator that accepts everything fails.
//
//   node validate.mjs ../prometheus-operator        (after `npm ci` here)
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

const dir = process.argv[2];
if (!dir) {
  console.error("usage: node validate.mjs COMPONENT_DIR");
  process.exit(2);
}
const kustomization = parse(readFileSync(join(dir, "kustomization.yaml"), "utf8"));
let failed = 0;
if (kustomization.kind !== "Component" || kustomization.apiVersion !== "kustomize.config.k8s.io/v1alpha1") {
  console.error(`${dir}/kustomization.yaml: not a kustomize Component`);
  failed++;
}
const objects = [];
for (const file of kustomization.resources ?? []) {
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
console.log(`ok: ${objects.length} objects valid, ${Object.keys(variants).length} broken variants rejected`);
