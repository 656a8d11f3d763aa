# zopeops.stages: runs an application's site-initialisation script once (docs/applications.md).
#
#   zconsole run <instance>/etc/zope-console.conf zopeops-init.py [--check] WHEN_MISSING \
#       SCRIPT [ARG ...]
#
# zconsole binds ``app`` (Zope's root, as the system user) before it runs this file. When the
# ZODB path WHEN_MISSING does not exist (or WHEN_MISSING is empty), SCRIPT runs like a zconsole
# script of its own: ``app`` bound, ``__name__ == '__main__'``, sys.argv = [SCRIPT, ARG ...];
# it commits its own transaction. Afterwards WHEN_MISSING must exist, so a script that forgot
# to commit is caught. The last line says what happened, for the role's ``changed``:
#   zopeops-init: ran SCRIPT | zopeops-init: WHEN_MISSING exists | zopeops-init: would run SCRIPT
import os
import sys

import transaction


def main(app, argv):
    args = list(argv)
    check = '--check' in args
    if check:
        args.remove('--check')
    if len(args) < 2:
        sys.exit('zopeops-init: usage: zopeops-init.py [--check] WHEN_MISSING SCRIPT [ARG ...]')
    when_missing, script, script_args = args[0], args[1], args[2:]
    if not os.path.isfile(script):
        sys.exit('zopeops-init: %s is not in the release. zopeops_init_script is a path inside '
                 'the application repository (the release keeps it under src/), e.g. '
                 'scripts/create_site.py: correct it in the inventory.' % script)
    if when_missing and app.unrestrictedTraverse(when_missing.strip('/'), None) is not None:
        print('zopeops-init: %s exists' % when_missing)
        return
    if check:
        print('zopeops-init: would run %s' % script)
        return
    with open(script) as handle:
        code = compile(handle.read(), script, 'exec')
    sys.argv = [script] + script_args
    exec(code, {'__name__': '__main__', 'app': app})
    sys.stdout.flush()
    if when_missing:
        transaction.abort()
        app._p_jar.sync()
        if app.unrestrictedTraverse(when_missing.strip('/'), None) is None:
            sys.exit('zopeops-init: %s ran, but %s still does not exist: the script must create '
                     'it and commit (transaction.commit()), or zopeops_init_when_missing must '
                     'name what it creates' % (script, when_missing))
    print('zopeops-init: ran %s' % script)


# zconsole's argv: [zconsole, run, <zope.conf>, <this file>, ...]
main(app, sys.argv[4:])  # noqa: F821  # pylint: disable=undefined-variable  # zconsole binds app
