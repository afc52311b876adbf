"""Model families behind one interface (base.py), their registry (families.py), and what the
transformer family trains with: one step (step.py), the fold loop (transformer.py), device and
precision, batches, schedules, several processes, backbones, the planner's probes."""
