// Checks protocol/ with ajv in strict mode (JSON Schema draft 2020-12): every schema file
// compiles, and every golden example validates: v1/examples/*.json against the def each
// names, openpi-0/examples.json against the messages of its direction.
//
// usage: node check-schemas.mjs [PROTOCOL_DIR]   (default: the directory above this one)
// Exit 0 and one summary line on stdout when all is well; exit 1 and one line per problem on
// stderr otherwise. Installed by `npm ci --prefix protocol/tools`; tests/test_protocol_schema.py
// runs it.

import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

// Annotations the schema files carry beside JSON Schema's own keywords (see protocol/README.md):
// declared, so that strict mode knows them instead of rejecting them as typos.
const ANNOTATIONS = ["x-hud", "x-openpi"];

const root = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), ".."));
const problems = [];

function load(path) {
  return JSON.parse(readFileSync(path, "utf8"));
}

function newAjv() {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  addFormats(ajv);
  for (const keyword of ANNOTATIONS) ajv.addKeyword({ keyword, schemaType: "object" });
  return ajv;
}

function describe(errors) {
  return errors.map((e) => `${e.instancePath || "/"} ${e.message} (${e.schemaPath})`).join("; ");
}

function schemaFiles(dir) {
  return readdirSync(dir)
    .filter((name) => name.endsWith(".schema.json"))
    .sort()
    .map((name) => join(dir, name));
}

// Every schema file, added to one ajv and compiled in strict mode; returns the $ids of those
// that compiled, by file.
function compileAll(ajv, files) {
  const added = new Map();
  for (const file of files) {
    const doc = load(file);
    try {
      ajv.addSchema(doc);
      added.set(file, doc.$id);
    } catch (err) {
      problems.push(`${file}: ${err.message}`);
    }
  }
  const compiled = new Map();
  for (const [file, id] of added) {
    try {
      ajv.getSchema(id);
      compiled.set(file, id);
    } catch (err) {
      problems.push(`${file}: does not compile in strict mode: ${err.message}`);
    }
  }
  return compiled;
}

function check(validate, message, where) {
  if (!validate(message)) problems.push(`${where}: ${describe(validate.errors)}`);
}

// v1/examples/*.json: {"schema": file, "def": name, "description", "message"}.
function checkV1(ajv) {
  const dir = join(root, "v1");
  const compiled = compileAll(ajv, schemaFiles(dir));
  const examples = readdirSync(join(dir, "examples")).filter((n) => n.endsWith(".json")).sort();
  for (const name of examples) {
    const file = join(dir, "examples", name);
    const example = load(file);
    const id = compiled.get(join(dir, example.schema));
    const validate = id && ajv.getSchema(`${id}#/$defs/${example.def}`);
    if (id === undefined) {
      problems.push(`${file}: not checked: ${example.schema} is missing or does not compile`);
    } else if (!validate) {
      problems.push(`${file}: ${example.schema} has no def ${example.def}`);
    } else {
      check(validate, example.message, `${file}: invalid ${example.def}`);
    }
  }
  return [compiled.size, examples.length];
}

// openpi-0/examples.json: a list of {"from": "agent" | "environment", "message"}; x-openpi
// holds the schema of each direction (its refs point into the document's $defs).
function checkOpenpi(ajv) {
  const dir = join(root, "openpi-0");
  const file = join(dir, "messages.schema.json");
  const compiled = compileAll(ajv, [file]);
  const frames = load(join(dir, "examples.json"));
  if (!compiled.size) return [0, frames.length];
  const doc = load(file);
  const direction = (part) =>
    ajv.compile({ $schema: doc.$schema, $defs: doc.$defs, ...doc["x-openpi"][part] });
  const validators = { agent: direction("from_agent"), environment: direction("to_agent") };
  frames.forEach((frame, i) => {
    check(validators[frame.from], frame.message, `${dir}/examples.json[${i}] (${frame.from})`);
  });
  return [1, frames.length];
}

const [v1Schemas, v1Examples] = checkV1(newAjv());
const [openpiSchemas, openpiFrames] = checkOpenpi(newAjv());
if (problems.length) {
  for (const line of problems) process.stderr.write(`${line}\n`);
  process.exit(1);
}
process.stdout.write(`ok: ${v1Schemas + openpiSchemas} schema files compile in strict mode; ` +
                     `${v1Examples} v1 examples and ${openpiFrames} openpi-0 frames validate\n`);
