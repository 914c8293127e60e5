"""``fewstep bench``: trains or loads models, samples them at many NFE and writes results.jsonl/report/plots."""
