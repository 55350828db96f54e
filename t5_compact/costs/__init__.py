"""Training cost accounting at real model size without weights: FLOPs per update and a memory plan."""
