"""Suite-matched 'oracle' mixture for the synth corpus: the held-out suite's own (concept, task)
distribution mapped onto the k-means cells. A ceiling probe, not a method: it reads the benchmark
definitions (src/data/synth.rs, copied into SUITE below) that no search may see.

Usage (docs/transfer.md, "The ceiling on this corpus"):
    python3 scripts/suite_oracle.py RAW_DIR CORPUS_DIR oracle.json [--wrap]
    mixatlas transfer --corpus CORPUS_DIR --recipe oracle.json --baselines natural,uniform ...
"""
import json, sys, glob, numpy as np
raw, corpus, out = sys.argv[1], sys.argv[2], sys.argv[3]
T = ["captioning", "ocr", "grounding", "detection", "vqa"]
SUITE = {
 "coco-caption": ({"street":.25,"indoor":.25,"animals":.2,"food":.15,"vehicles":.15}, {"captioning":1}),
 "pope": (None, {"vqa":1}),
 "lvis-det": ({"food":.3,"animals":.3,"nature":.2,"sports":.2}, {"detection":1}),
 "docvqa": ({"documents":.6,"screenshots":.4}, {"vqa":.5,"ocr":.5}),
 "chartqa": ({"charts":1}, {"vqa":.7,"ocr":.3}),
 "textvqa": ({"street":.5,"vehicles":.3,"sports":.2}, {"ocr":.6,"vqa":.4}),
 "gqa": ({"street":.3,"indoor":.3,"animals":.2,"food":.2}, {"vqa":1}),
 "countbench": (None, {"vqa":1}),
 "refcoco": ({"street":.4,"indoor":.3,"sports":.3}, {"grounding":1}),
}
sums, counts = {}, {}
for f in sorted(glob.glob(raw + "/train-*.jsonl")):
    for line in open(f):
        s = json.loads(line); c = s["concept"]; v = np.array(s["clip"])
        sums[c] = sums.get(c, 0) + v; counts[c] = counts.get(c, 0) + 1
freq = {c: counts[c] / sum(counts.values()) for c in counts}
cmean = {c: sums[c] / counts[c] for c in sums}
m = json.load(open(corpus + "/manifest.json"))
K = len(m["axes"]["concepts"])
clus = np.zeros((K, len(next(iter(cmean.values())))))
for cell in m["cells"]:
    e = cell["embedding"]; clus[cell["concept"]] += e["count"] * np.array(e["mean"])
def cos(a, b): return a @ b / np.linalg.norm(a) / np.linalg.norm(b)
owner = {c: max(range(K), key=lambda k: cos(clus[k], cmean[c])) for c in cmean}
print("concept -> cluster:", owner, file=sys.stderr)
w = {}
for name, (conc, tasks) in SUITE.items():
    conc = conc or freq
    z = sum(conc.values())
    for c, pc in conc.items():
        for t, pt in tasks.items():
            key = (owner[c], T.index(t)); w[key] = w.get(key, 0) + pc / z * pt / len(SUITE)
names = {(c["concept"], c["task"]): c["name"] for c in m["cells"]}
mix = {names[k]: v for k, v in w.items() if k in names}
z = sum(mix.values()); mix = {k: v / z for k, v in sorted(mix.items())}
json.dump({"weights": mix} if "--wrap" in sys.argv else mix, open(out, "w"), indent=1)
print(f"{len(mix)} cells, lost {1-z:.3f} of the mass to missing cells", file=sys.stderr)
