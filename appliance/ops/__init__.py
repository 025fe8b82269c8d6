"""The daemon side of Forge: what forged schedules and runs, and how the CLI and the
dashboard reach it.

- `jobs`: the job queue (the `jobs` table's owner): enqueue, claim, finish, retry.
- `work`: what each job kind does (`KINDS`, `run_job`), the cycle's parts.
- `control`: the control socket's protocol (strict request models) and its client.
- `actions`: operator actions, asked of forged when it answers, done in the foreground
  when it does not.
"""
