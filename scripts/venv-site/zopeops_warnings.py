"""One warning of the controller's environment, silenced where it comes from.

ansible-core 2.19 imports cryptography's DSA names when its CLI starts
(ansible/_internal/_ssh/_ssh_agent.py), and cryptography 47 and newer deprecate DSA: every
playbook run began with a CryptographyDeprecationWarning that says nothing about the run. The
filter matches that one message, raised at that one import; every other warning stays. The
Makefile installs this module into the project's virtualenv with a .pth line.
"""
import warnings

warnings.filterwarnings('ignore', message=r'DSA is deprecated',
                        module=r'ansible\._internal\._ssh\._ssh_agent$')
