// A stand-in for `kubectl kustomize` on machines without kubectl: renders a kustomization that uses only the
// subset deploy/k8s needs, and refuses anything else rather than render it differently.
//
//   node kustomize-lite.mjs DIR > rendered.yaml
//   node kustomize-lite.mjs --compare A.yaml B.yaml     exit 1 unless both hold the same objects
//
// Subset: `resources` (YAML files and directories holding a kustomization), `namespace`, `configMapGenerator`
// (`files` only; the name gets kustomize's content hash and references from pod templates follow it),
// `images` (newName / newTag), and `patches` whose file is a strategic-merge `$patch: delete` of whole objects.
// deploy/k8s/render.sh compares this output with real kustomize wherever kubectl exists, so the two cannot
// drift apart unnoticed.

import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { parseAllDocuments, stringify } from "yaml";

const KNOWN = new Set(["apiVersion", "kind", "resources", "namespace", "configMapGenerator", "images", "patches"]);

function fail(msg) {
  throw new Error(`kustomize-lite: ${msg}`);
}

function readYamlDocs(path) {
  return parseAllDocuments(readFileSync(path, "utf8"))
    .map((d) => {
      if (d.errors.length) fail(`${path}: ${d.errors[0].message}`);
      return d.toJS();
    })
    .filter((o) => o !== null && o !== undefined);
}

function kustomizationFile(dir) {
  for (const name of ["kustomization.yaml", "kustomization.yml", "Kustomization"]) {
    if (existsSync(join(dir, name))) return join(dir, name);
  }
  fail(`${dir}: no kustomization.yaml`);
}

// kustomize v5's api/hasher: sha256 of the JSON of {data, kind, name} (Go's encoding/json: keys sorted, <>&
// escaped), the first 10 hex digits with 0 1 3 a e swapped for letters so that the suffix is never all digits.
// The name it hashes is empty: its lookup of "metadata/name" finds nothing (v2 hashed the real name, so v2
// and v5 suffixes differ). Checked against kubectl kustomize 5.5 by render.sh.
function configMapHash(data) {
  const sorted = Object.fromEntries(Object.keys(data).sort().map((k) => [k, data[k]]));
  const json = JSON.stringify({ data: sorted, kind: "ConfigMap", name: "" })
    .replace(/</g, "\\u003c").replace(/>/g, "\\u003e").replace(/&/g, "\\u0026")
    .replace(/\u2028/g, "\\u2028").replace(/\u2029/g, "\\u2029");
  const hex = createHash("sha256").update(json).digest("hex").slice(0, 10);
  return hex.replace(/[013ae]/g, (c) => ({ 0: "g", 1: "h", 3: "k", a: "m", e: "t" })[c]);
}

const CLUSTER_SCOPED = new Set(["Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
  "PersistentVolume", "StorageClass", "PriorityClass", "MutatingWebhookConfiguration",
  "ValidatingWebhookConfiguration"]);

function podSpecs(obj) {
  const specs = [];
  if (obj.spec?.template?.spec) specs.push(obj.spec.template.spec);
  if (obj.spec?.jobTemplate?.spec?.template?.spec) specs.push(obj.spec.jobTemplate.spec.template.spec);
  if (obj.kind === "Pod" && obj.spec) specs.push(obj.spec);
  return specs;
}

function containersOf(spec) {
  return [...(spec.initContainers ?? []), ...(spec.containers ?? [])];
}

// Points pod templates at the hashed names of generated ConfigMaps. Done once over the whole render, as
// kustomize does: an overlay's own resources may use a ConfigMap its base generates.
function followRenames(objects, renamed) {
  for (const obj of objects) {
    for (const spec of podSpecs(obj)) {
      for (const v of spec.volumes ?? []) {
        if (v.configMap && renamed.has(v.configMap.name)) v.configMap.name = renamed.get(v.configMap.name);
        for (const s of v.projected?.sources ?? []) {
          if (s.configMap && renamed.has(s.configMap.name)) s.configMap.name = renamed.get(s.configMap.name);
        }
      }
      for (const c of containersOf(spec)) {
        for (const e of c.envFrom ?? []) {
          if (e.configMapRef && renamed.has(e.configMapRef.name)) e.configMapRef.name = renamed.get(e.configMapRef.name);
        }
        for (const e of c.env ?? []) {
          const ref = e.valueFrom?.configMapKeyRef;
          if (ref && renamed.has(ref.name)) ref.name = renamed.get(ref.name);
        }
      }
    }
  }
}

function render(dir, renamed) {
  dir = resolve(dir);
  const k = readYamlDocs(kustomizationFile(dir))[0] ?? {};
  for (const key of Object.keys(k)) {
    if (!KNOWN.has(key)) fail(`${dir}: field '${key}' is outside the subset this renderer supports`);
  }
  let objects = [];
  for (const entry of k.resources ?? []) {
    const path = join(dir, entry);
    if (!existsSync(path)) fail(`${dir}: resource ${entry} not found`);
    objects.push(...(statSync(path).isDirectory() ? render(path, renamed) : readYamlDocs(path)));
  }

  for (const gen of k.configMapGenerator ?? []) {
    for (const key of Object.keys(gen)) {
      if (!["name", "files"].includes(key)) fail(`${dir}: configMapGenerator field '${key}' not supported`);
    }
    const data = {};
    for (const f of gen.files ?? []) {
      if (f.includes("=")) fail(`${dir}: configMapGenerator 'key=path' files not supported`);
      data[basename(f)] = readFileSync(join(dir, f), "utf8");
    }
    const hashed = `${gen.name}-${configMapHash(data)}`;
    renamed.set(gen.name, hashed);
    objects.push({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: hashed }, data });
  }
  for (const p of k.patches ?? []) {
    if (Object.keys(p).some((key) => key !== "path")) fail(`${dir}: only 'patches: - path: FILE' is supported`);
    for (const patch of readYamlDocs(join(dir, p.path))) {
      const keys = Object.keys(patch).filter((key) => !["apiVersion", "kind", "metadata", "$patch"].includes(key));
      if (patch.$patch !== "delete" || keys.length) fail(`${p.path}: only whole-object '$patch: delete' is supported`);
      const before = objects.length;
      objects = objects.filter((o) => !(o.kind === patch.kind && o.apiVersion === patch.apiVersion &&
                                        o.metadata?.name === patch.metadata?.name));
      if (objects.length !== before - 1) fail(`${p.path}: matches ${before - objects.length} objects, not 1`);
    }
  }

  if (k.namespace) {
    for (const obj of objects) {
      if (!CLUSTER_SCOPED.has(obj.kind)) obj.metadata.namespace = k.namespace;
    }
  }

  for (const img of k.images ?? []) {
    for (const obj of objects) {
      for (const spec of podSpecs(obj)) {
        for (const c of containersOf(spec)) {
          const m = /^([^@]*?)(?::([^:/@]+))?(@.+)?$/.exec(c.image ?? "");
          if (!m || m[1] !== img.name) continue;
          c.image = `${img.newName ?? m[1]}${img.newTag !== undefined ? `:${img.newTag}` : m[2] ? `:${m[2]}` : ""}` +
                    `${img.digest ? `@${img.digest}` : m[3] ?? ""}`;
        }
      }
    }
  }
  return objects;
}

// kustomize's default ("legacy") output order: these kinds first, in this order, the rest after, each group
// by apiVersion, kind, namespace and name.
const ORDER_FIRST = ["Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
  "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap", "Secret",
  "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume", "PersistentVolumeClaim",
  "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget"];
const ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"];

export function sortLikeKustomize(objects) {
  const rank = (o) => {
    const first = ORDER_FIRST.indexOf(o.kind);
    if (first >= 0) return first;
    const last = ORDER_LAST.indexOf(o.kind);
    return last >= 0 ? ORDER_FIRST.length + 1 + last : ORDER_FIRST.length;
  };
  const id = (o) => `${o.apiVersion}|${o.kind}|${o.metadata?.namespace ?? ""}|${o.metadata?.name ?? ""}`;
  return [...objects].sort((a, b) => rank(a) - rank(b) || (id(a) < id(b) ? -1 : id(a) > id(b) ? 1 : 0));
}

export function renderToYaml(dir) {
  const renamed = new Map(); // generated ConfigMap name -> hashed name
  const objects = render(dir, renamed);
  followRenames(objects, renamed);
  return sortLikeKustomize(objects).map((o) => stringify(o, { lineWidth: 0 })).join("---\n");
}

// Same objects, whatever the order of objects and of their fields; returns the first difference or null.
export function compareRenders(a, b) {
  const canon = (v) => Array.isArray(v) ? v.map(canon)
    : v && typeof v === "object" ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])])) : v;
  const docs = (path) => sortLikeKustomize(readYamlDocs(path)).map((o) => JSON.stringify(canon(o)));
  const [x, y] = [docs(a), docs(b)];
  if (x.length !== y.length) return `${a} has ${x.length} objects, ${b} has ${y.length}`;
  for (let i = 0; i < x.length; i++) {
    if (x[i] !== y[i]) {
      let j = 0;
      while (j < x[i].length && x[i][j] === y[i][j]) j++;
      return `object ${i} differs: ...${x[i].slice(Math.max(0, j - 60), j + 60)}... vs ...${y[i].slice(Math.max(0, j - 60), j + 60)}...`;
    }
  }
  return null;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  try {
    if (args[0] === "--compare" && args.length === 3) {
      const diff = compareRenders(args[1], args[2]);
      if (diff) { console.error(`kustomize-lite: ${diff}`); process.exit(1); }
    } else if (args.length === 1) {
      process.stdout.write(renderToYaml(args[0]));
    } else {
      console.error("usage: node kustomize-lite.mjs DIR | --compare A.yaml B.yaml");
      process.exit(2);
    }
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
}
