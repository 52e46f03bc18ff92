"""The run configs: one YAML file per environment family, plus ``default.yaml`` (the main job).

This folder is a package only so that wheels ship the YAML files next to ``agents/``, which finds them by path
(``agents.run.config.CONFIG_DIR``); nothing here is meant to be imported.
"""
