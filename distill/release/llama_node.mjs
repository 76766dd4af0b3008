// llama.cpp (node-llama-cpp's prebuilt binary) behind a JSON-lines pipe: one request per line on stdin,
// one answer per line on stdout. Logits travel as base64 float32, one row per position.
import {createRequire} from "node:module";
import {createInterface} from "node:readline";
import path from "node:path";

const [modelPath, contextSize, modules] = process.argv.slice(2);
const require = createRequire(path.join(modules, "package.json"));
const {getLlama, LlamaLogLevel} = await import(require.resolve("node-llama-cpp"));

const answer = (message) => process.stdout.write(JSON.stringify(message) + "\n");
let model, context, sequence;
try {
    const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error,
        usePrebuiltBinaries: true});
    model = await llama.loadModel({modelPath});
    context = await model.createContext({contextSize: Number(contextSize), sequences: 1, threads: 2});
    sequence = context.getSequence();
} catch (error) {
    answer({error: `cannot load ${path.basename(modelPath)}: ${error.message || error}`});
    process.exit(1);
}

function row(logits) {
    const out = new Float32Array(logits.size);
    for (const [token, value] of logits) out[token] = value;
    return Buffer.from(out.buffer).toString("base64");
}

async function evaluate(ids) {
    const items = ids.map((id) => [id, {generateNext: {logits: true}}]);
    const results = await sequence.controlledEvaluate(items);
    return results.map((result) => row(result.next.logits));
}

answer({ready: true});
for await (const line of createInterface({input: process.stdin})) {
    try {
        const request = JSON.parse(line);
        if (request.op === "start") await sequence.clearHistory();
        answer({logits: await evaluate(request.op === "start" ? request.ids : [request.token])});
    } catch (error) {
        answer({error: String(error.message || error)});
    }
}
await context.dispose();
await model.dispose();
