"""Ranking a model's units, layers and input features on the user's data (SHAP and its peers)."""
