# zopeops.stages: gives the push page's permission to a role on the Zope application root
# (role push_page). Idempotent; the role is created at the root when it does not exist.
#
#   zconsole run <instance>/etc/zope-console.conf zopeops-push-grant.py [--check] ROLE
#
# zconsole binds ``app`` (Zope's root, as the system user). Manager keeps the permission.
# The last line says what happened, for the role's ``changed``:
#   zopeops-push-grant: granted ROLE | zopeops-push-grant: ROLE has it | ...: would grant ROLE
import sys

import transaction

PERMISSION = 'ZopeOps: Push branding'


def roles_with(app, permission):
    try:
        settings = app.rolesOfPermission(permission)
    except ValueError:
        sys.exit('zopeops-push-grant: Zope does not know the permission %r: the release lacks '
                 'Products.ZopeOpsPush (the role push_page installs it; run site.yml).'
                 % permission)
    return sorted(entry['name'] for entry in settings if entry['selected'])


def main(app, argv):
    args = list(argv)
    check = '--check' in args
    if check:
        args.remove('--check')
    if len(args) != 1 or not args[0]:
        sys.exit('zopeops-push-grant: usage: zopeops-push-grant.py [--check] ROLE')
    role = args[0]
    have = roles_with(app, PERMISSION)
    if role in have:
        print('zopeops-push-grant: %s has it' % role)
        return
    if check:
        print('zopeops-push-grant: would grant %s' % role)
        return
    if role not in app.valid_roles():
        app._addRole(role)  # pylint: disable=protected-access
    app.manage_permission(PERMISSION, roles=sorted(set(have) | {role, 'Manager'}), acquire=0)
    transaction.get().note('zopeops push_page: %s may push brandings' % role)
    transaction.commit()
    print('zopeops-push-grant: granted %s' % role)


# zconsole's argv: [zconsole, run, <zope.conf>, <this file>, ...]
main(app, sys.argv[4:])  # noqa: F821  # pylint: disable=undefined-variable  # zconsole binds app
