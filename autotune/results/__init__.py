"""What the user sees and ships: the leaderboard (table and live view), the exported bundle,
the report, charts, and files for optuna-dashboard."""
