"""The time budget (`make all TIME=30m`): measured costs in, a plan out, kept while the flow runs.

costs    what a candidate costs here (``Cost``) and what the data asks for (``Work``): seconds
planner  the plan as a pure function: the preset's ceiling, cut in a fixed order until it fits
planfile reports/plan.json: written by the plan stage, applied by select/tune/train, updated as stages finish
clock    the budget's clock (``Deadline``) and whether other processes shared the CPU (``Others``)
replan   train's re-plan before each run and its guard before each fold
"""
