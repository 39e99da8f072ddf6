import json, sys, asyncio, tempfile, pathlib
from collections import Counter
sys.path.insert(0, "tests")
from test_coldstart_synthesis import OracleTeacher
from longshort.analysis import coldstart_builder
from longshort.analysis.equations import equations
from longshort.config import load_config
from longshort.data import load_problems
from longshort.data.longchains import long_chains
from longshort.models import tiny_tokenizer, load_tokenizer
smol = load_tokenizer("smollm2-135m") if "smol" in sys.argv else None
problems = load_problems("synthetic:train", limit=200, min_steps=1, max_steps=3, seed=5)
chains = {c.problem_id: c for c in long_chains(problems)}
for recipe in ["tiny", "longshort_longcot_tiny"]:
  for steps in ["1", "2"]:
    tmp = pathlib.Path(tempfile.mkdtemp())
    path = tmp / "chains.jsonl"
    path.write_text("".join(json.dumps({"id": c.problem_id, "response": c.response()}) + "\n" for c in chains.values()))
    config = load_config(recipe, ["sft.coldstart=synthesis", f"sft.synthesis.chains={path}", f"sft.synthesis.thought_max_steps={steps}"])
    tok = tiny_tokenizer()
    teacher = OracleTeacher(tok, chains, {p.id: p.prompt for p in problems}, config.sft.synthesis.rollouts)
    coldstart_builder.teacher_engine = lambda s, seed: teacher
    transcripts, summary = coldstart_builder.build(config, problems, tmp / "out")
    g=gk=r=rd=0; longest=Counter(); longest_smol=Counter(); handbacks=0
    for t in transcripts:
        c = chains[t["id"]]
        L = "\n".join(x["text"] for x in t["turns"] if x["role"]=="long"); S="\n".join(x["text"] for x in t["turns"] if x["role"]=="short")
        for st,k in zip(c.steps,c.kinds):
            if k=="gold": g+=1; gk += st in L or all(e.text in S for e in equations(st))
            else: r+=1; rd += st not in L and st not in S
        for x in t["turns"]:
            longest[x["role"]] = max(longest[x["role"]], len(tok.encode(x["text"], add_special_tokens=False))+1)
            if smol: longest_smol[x["role"]] = max(longest_smol[x["role"]], len(smol.encode(x["text"], add_special_tokens=False))+1)
            handbacks += "Continue." in x["text"]
    caps = {k: config.agents[k].sampling.max_new_tokens for k in ("long","short")}
    print(recipe, "max_steps", steps, "kept", summary["kept"], "/", len(problems), summary["dropped"], "gold kept %.1f%%" % (100*gk/max(g,1)), "redundant dropped %.1f%%" % (100*rd/max(r,1)), f"({g} gold, {r} redundant)", "longest tiny-tok", dict(longest), "smol", dict(longest_smol), "caps", caps, "split handbacks", handbacks, summary["thoughts"])
