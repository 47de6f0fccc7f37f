"""Reinforcement learning over instruction rewrites (TeaMs-RL): the rewrite
operations, the environment a policy acts in, the reviewer that rewards it and the
policy's training through sb3-contrib's TRPO. No RL algorithm is written here."""
