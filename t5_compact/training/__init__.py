"""`t5-compact train`: config, prompt data, teacher cache, checkpoints, validation images and the training loop.

Entry points: `TrainConfig` / `config_from_args` (config.py), `train(config)` (loop.py),
`build_teacher_cache(config)` (cache.py), `TeacherCache` (teacher_cache.py).
"""
