"""The run configs: one YAML file per environment family (``tmaze.yaml`` is the main job), plus named
recipes such as ``tmaze_long.yaml``.

This folder is a package only so that wheels ship the YAML files next to ``agents/``, which finds them by path
(``agents.run.config.CONFIG_DIR``); nothing here is meant to be imported.
"""
