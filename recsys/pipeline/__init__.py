"""The functions flow steps and notebooks call: one place for each stage's logic, so a flow
step stays a few lines and a notebook runs exactly the same code."""
