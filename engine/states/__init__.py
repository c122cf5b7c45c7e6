"""One module per state; each exposes READS, POLICIES, WRITES and a pure `run(inputs, policies, ctx)`."""
