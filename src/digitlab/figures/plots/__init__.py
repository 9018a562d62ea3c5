"""Plot functions that draw weights, data, predictions and sweeps as matplotlib Figures.

Each submodule holds one subject and imports only matplotlib and numpy (no MLflow, no
Lightning), so a caller pays for the subject it draws: import from the submodule itself.
"""
