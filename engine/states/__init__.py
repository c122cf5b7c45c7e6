"""One module per state; each exposes READS, POLICIES, WRITES and a pure `run(inputs, policies, ctx)`
(keyword arguments after ctx: the extras its spec declares, engine/stages.py)."""
