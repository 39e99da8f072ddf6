"""Recipe YAML files, shipped inside the installed package so `recipe=NAME` works from any directory."""
