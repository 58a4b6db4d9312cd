"""Learning: advantage estimators, policy/value losses, the sharded train step, SFT."""
