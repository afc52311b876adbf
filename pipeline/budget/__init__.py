"""The time budget (`make all TIME=30m`): measured costs in, a plan out, kept while the flow runs.

plans    the plan's two records: ``Plan`` (the decision) and ``Ledger`` (what the stages met), one file
costs    seconds: a fold, a run, each stage (``StageCosts``: what a stage costs beyond its models)
moves    every setting the plan may change, one ``Move``: its cut, its give-back, its expected loss
planner  the plan as a pure function: the preset's ceiling, cut move by move until it fits
paces    reports/paces.json: what a machine measured, to plan on it again or from elsewhere
planfile reports/plan.json: written by the plan stage, applied by select/tune/train, its ledger kept current
clock    the budget's clock (``Deadline``) and whether other processes shared the CPU (``Others``)
replan   train's re-plan before each run, its guard before each fold, what time left over buys
"""
