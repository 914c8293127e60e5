"""The only place that turns configs into objects, one module per job.

- ``device``: the compute device and seeded network initialisation.
- ``datasets``: the dataset registry (``register_dataset``): data kind, shape, config resolution, source.
- ``models``: the teacher-kind registry (``register_teacher_kind``): process, net, denoiser, training method.
- ``trainers``: a ready-to-fit ``Trainer`` of a teacher / from-scratch ``RunConfig`` (``build_trainer``).
- ``distill_config``: the default ``DistillConfig`` of a teacher and its one-time resolution (``resolve_distill``).
- ``distill``: teacher, student, auxiliary and ``Trainer`` of a distillation (``build_distillation``).
- ``runs``: a trained run rebuilt from its folder for sampling (``load_trained``).

Import from the module that does the job, e.g. ``from fewstep.build.runs import load_trained``.
"""
