"""Evidence packs are written here (generated, not committed); `lock.json` is the committed CI
ratchet, shipped with seg2b as package data (installed as `seg2b_evidence`)."""
