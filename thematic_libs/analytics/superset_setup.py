"""Prepare Superset's metadata database: run with Superset's own interpreter (`.venv-superset/bin/python`).

`yiwang superset start` runs this once per Superset version (then a stamp file says it is done): the schema
migrations (`superset db upgrade`), the roles and permissions (`superset init`) and the admin user, whose
password is kept in `<home>/superset/admin_password` (generated locally on the first start). One process does
all three: each `superset` command on its own pays Superset's 5-10 s import again.

It imports nothing of yiwang (Superset's environment does not have it); its input is the environment:
SUPERSET_CONFIG_PATH, SUPERSET_HOME, SUPERSET_SECRET_KEY and YIWANG_SUPERSET_ADMIN_PASSWORD.
"""

import os
import sys

ADMIN = "admin"


def main() -> int:
    password = os.environ["YIWANG_SUPERSET_ADMIN_PASSWORD"]
    from flask_migrate import upgrade
    from superset.app import create_app

    app = create_app()
    with app.app_context():
        from superset import appbuilder, security_manager

        print("yiwang setup: schema migrations", flush=True)
        upgrade()
        print("yiwang setup: roles and permissions", flush=True)
        appbuilder.add_permissions(update_perms=True)
        security_manager.sync_role_definitions()
        user = security_manager.find_user(username=ADMIN)
        if user is None:
            role = security_manager.find_role(security_manager.auth_role_admin)
            created = security_manager.add_user(ADMIN, "分析", "管理员", "admin@localhost", role, password)
            if not created:
                print("yiwang setup: the admin user could not be created", file=sys.stderr)
                return 1
            print("yiwang setup: admin user created", flush=True)
        else:
            # the password file is the truth: a rotated or restored file takes effect at the next setup
            security_manager.reset_password(user.id, password)
            print("yiwang setup: admin password set from the password file", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
