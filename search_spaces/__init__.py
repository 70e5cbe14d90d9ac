"""Search-space YAML files shipped with autotune (installed as ``autotune.search_spaces``)."""
