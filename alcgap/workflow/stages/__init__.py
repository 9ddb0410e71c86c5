"""The stages of a campaign, each a module with its own checkpointed state:
bootstrap (iteration 0), label, fit, explore (MD, picks, labels), judge, stop."""
