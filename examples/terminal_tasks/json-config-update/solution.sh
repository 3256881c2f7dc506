#!/bin/bash
python3 - <<'EOF'
import json

with open("config.json") as handle:
    config = json.load(handle)
config["debug"] = False
config["port"] = 8080
config["database"]["pool_size"] = 10
with open("config.json", "w") as handle:
    json.dump(config, handle, indent=2)
    handle.write("\n")
EOF
