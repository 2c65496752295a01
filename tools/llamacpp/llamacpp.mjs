// Real llama.cpp on a GGUF file, through node-llama-cpp's prebuilt CPU binaries (no
// compiler). tinylm's tests and bench/ call it with one JSON request on stdin and read one
// JSON answer on stdout (see src/tinylm/interop/llamacpp.py):
//
//   {"model": "out/model.gguf", "threads": 2,
//    "texts": ["Hello world"],          -> "ids": [[15496, 995]]   (no BOS, no specials)
//    "prompt": [464, 2106],             the ids the next three work from
//    "probabilities": true,             -> "probabilities": [p(id) for every id] after prompt
//    "greedy": 32,                      -> "greedy": [ids], "greedy_seconds": wall time
//    "repeats": 1}                         (median of `repeats` timed greedy runs)
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath: request.model, gpuLayers: 0});
const answer = {};
answer.ids = (request.texts ?? []).map((text) => Array.from(model.tokenize(text, false)));

const prompt = request.prompt ?? [];
if (prompt.length > 0) {
    const context = await model.createContext({
        contextSize: request.context ?? 512,
        threads: request.threads ?? 2,
        batchSize: request.context ?? 512,
        sequences: 1,
    });
    const sequence = context.getSequence();
    if (request.probabilities) {
        // The full next-token distribution: no sampling step may cut or reshape it.
        const items = prompt.map((id, i) => i < prompt.length - 1 ? id : [id, {
            generateNext: {probabilities: true, options: {temperature: 1, topK: 0, topP: 1, minP: 0}},
        }]);
        const out = await sequence.controlledEvaluate(items);
        const probabilities = out[prompt.length - 1].next.probabilities;
        const dense = new Array(request.vocab_size ?? probabilities.size).fill(0);
        for (const [id, p] of probabilities) dense[id] = p;
        answer.probabilities = dense;
        answer.probabilities_listed = probabilities.size;
        await sequence.clearHistory();
    }
    if (request.greedy) {
        const times = [];
        for (let r = 0; r < (request.repeats ?? 1); r++) {
            await sequence.clearHistory();
            const ids = [];
            const start = process.hrtime.bigint();
            for await (const id of sequence.evaluate(prompt, {temperature: 0, yieldEogToken: true})) {
                ids.push(id);
                if (ids.length >= request.greedy || model.isEogToken(id)) break;
            }
            times.push(Number(process.hrtime.bigint() - start) / 1e9);
            answer.greedy = ids;
        }
        times.sort((a, b) => a - b);
        answer.greedy_seconds = times[Math.floor(times.length / 2)];
    }
    await context.dispose();
}
await model.dispose();
process.stdout.write(JSON.stringify(answer) + "\n");
