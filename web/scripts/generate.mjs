// Generates src/gen from proto.binpb, the descriptor set the Rust build
// compiles from ../proto (a cargo test keeps it current), by running
// protoc-gen-es in-process: no protoc, no buf, no network.

import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { create, fromBinary } from "@bufbuild/protobuf";
import { CodeGeneratorRequestSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { protocGenEs } from "@bufbuild/protoc-gen-es/dist/cjs/src/protoc-gen-es-plugin.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const set = fromBinary(FileDescriptorSetSchema, readFileSync(join(root, "proto.binpb")));
const request = create(CodeGeneratorRequestSchema, {
  fileToGenerate: set.file.filter((f) => f.name.startsWith("factcheck/")).map((f) => f.name),
  parameter: "target=ts",
  protoFile: set.file,
});
const response = protocGenEs.run(request);
if (response.error) {
  console.error(response.error);
  process.exit(1);
}
const out = join(root, "src", "gen");
rmSync(out, { recursive: true, force: true });
for (const file of response.file) {
  const path = join(out, file.name);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, file.content);
}
console.log(`generated ${response.file.map((f) => f.name).join(", ")}`);
