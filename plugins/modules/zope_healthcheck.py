#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: zope_healthcheck
short_description: Check that Zope/Plone URLs answer as expected, and which code they serve
description:
  - Requests every URL in O(urls) concurrently (one thread each) with C(GET) and checks the
    status code, optionally the body (O(body_regex)), the latency (O(max_latency)) and the
    code revision the site serves (O(expected_revision)).
  - A failing URL is retried with backoff (0.2 s doubling to 2 s) until it passes or the
    overall O(deadline) is reached, so a client that is still warming up is waited for.
  - Fails naming every URL that did not pass and why. Works against plain Zope (C(/)),
    Plone (C(/@@ok)) and any path, such as the example application's C(/@@zopeops-info).
  - Redirects are not followed unless O(follow_redirects) is set; a redirect is then reported
    as its 30x status.
version_added: 0.1.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - zopeops.stages.http
options:
  urls:
    description:
      - The URLs to check. Each is a URL string or a dict with C(url) and optionally
        C(name) (how it is called in results; default the URL), C(host_header) (a C(Host)
        header, e.g. to reach a virtual host through a load balancer), C(status_codes),
        C(body_regex) and C(max_latency), which override the options of the same names.
    type: list
    elements: raw
    required: true
  status_codes:
    description: The HTTP status codes that count as passing.
    type: list
    elements: int
    default: [200]
  body_regex:
    description:
      - A Python regular expression that must be found (C(re.search)) in the body (at most
        the first 1 MiB is read).
    type: str
  max_latency:
    description: Seconds within which the answer must arrive; slower counts as failing.
    type: float
  deadline:
    description:
      - Seconds for the whole check, retries included. The module returns soon after it
        whether or not every URL passed.
    type: float
    default: 60
  expected_revision:
    description:
      - The code revision every URL must serve, read from its body with
        O(revision_json_key) or O(revision_regex). This is how a promotion proves which
        release answers.
    type: str
  revision_json_key:
    description:
      - A dotted key into a JSON body whose value is the revision, e.g. C(revision) for the
        example application's C(/@@zopeops-info), or C(build.revision).
    type: str
  revision_regex:
    description:
      - A regular expression whose group 1 captures the revision from the body. Used when
        O(revision_json_key) is not given.
    type: str
  follow_redirects:
    description: Whether to follow redirects; the final answer is then checked.
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check mode and report what would change without changing it.
    support: full
    details:
      - The checks only read (C(GET) requests), so they also run in check mode and report
        real results.
  diff_mode:
    description: Not supported; nothing is changed.
    support: none
seealso:
  - module: zopeops.stages.zeo_service
notes:
  - The module always reports C(changed=false).
  - Requests are made from the managed host; use C(delegate_to) to check from elsewhere.
'''

EXAMPLES = r'''
- name: Ensure every client of test answers on its own port.
  zopeops.stages.zope_healthcheck:
    urls: "{{ zopeops_side_model.clients | map(attribute='port')
              | map('regex_replace', '^(.*)$', 'http://127.0.0.1:\\1/') | list }}"
    deadline: 60

- name: Ensure the twin serves the promoted revision.
  zopeops.stages.zope_healthcheck:
    urls:
      - url: http://127.0.0.1:18481/@@zopeops-info
        name: test_upgrade-client1
      - url: http://127.0.0.1:18482/@@zopeops-info
        name: test_upgrade-client2
    expected_revision: "{{ release_revision }}"
    revision_json_key: revision
    max_latency: 2

- name: Ensure the Plone site answers through the load balancer.
  zopeops.stages.zope_healthcheck:
    urls:
      - url: http://127.0.0.1:8000/@@ok
        host_header: www.example.org
        body_regex: '^OK'
    url_username: admin
    url_password: "{{ zope_admin_password }}"
'''

RETURN = r'''
results:
  description: One entry per URL, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    url:
      description: The URL, without any user:password part.
      type: str
    name:
      description: The URL's name (the URL unless a name was given).
      type: str
    status:
      description: The HTTP status of the last attempt; null when there was no answer.
      type: int
    latency:
      description: Seconds the last attempt took.
      type: float
    matched:
      description: Whether the body matched the body regex; null without one.
      type: bool
    revision:
      description: The revision read from the body; null when none was asked for or found.
      type: str
    error:
      description: Why the last attempt failed; null when it passed.
      type: str
    ok:
      description: Whether the URL passed.
      type: bool
    attempts:
      description: How many requests were made.
      type: int
  sample:
    - url: http://127.0.0.1:18481/@@zopeops-info
      name: test_upgrade-client1
      status: 200
      latency: 0.012
      matched: null
      revision: 9f2c1e0
      error: null
      ok: true
      attempts: 1
failed_urls:
  description: "Every failing URL as C(name (url): why), or C(url: why) when it has no name."
  returned: always
  type: list
  elements: str
  sample: ["client2 (http://127.0.0.1:18482/): connection refused (nothing listens there)"]
elapsed:
  description: Seconds the whole check took.
  returned: always
  type: float
  sample: 0.34
'''

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zopeops.stages.plugins.module_utils.http_checks import (
    CheckSpecError, build_checks, failure_summary, run_checks)
from ansible_collections.zopeops.stages.plugins.module_utils.redact import module_scrubber


def main():
    module = AnsibleModule(
        argument_spec=dict(
            urls=dict(type='list', elements='raw', required=True),
            status_codes=dict(type='list', elements='int', default=[200]),
            body_regex=dict(type='str'),
            max_latency=dict(type='float'),
            deadline=dict(type='float', default=60),
            request_timeout=dict(type='float', default=10),
            expected_revision=dict(type='str'),
            revision_json_key=dict(type='str', no_log=False),
            revision_regex=dict(type='str'),
            follow_redirects=dict(type='bool', default=False),
            url_username=dict(type='str'),
            url_password=dict(type='str', no_log=True),
            headers=dict(type='dict', default={}, no_log=True),
            validate_certs=dict(type='bool', default=True),
        ),
        mutually_exclusive=[('revision_json_key', 'revision_regex')],
        supports_check_mode=True,
    )
    params = module.params
    urls = params['urls']
    scrub = module_scrubber(module, params['url_password'], params['headers'],
                            [u if isinstance(u, str) else str((u or {}).get('url', ''))
                             for u in urls])
    try:
        checks = build_checks(urls, params['status_codes'], params['body_regex'],
                              params['max_latency'], params['expected_revision'],
                              params['revision_json_key'], params['revision_regex'])
    except CheckSpecError as exc:
        module.fail_json(msg=scrub.text('zope_healthcheck: the checks are not usable: %s.'
                                        % exc))
    if params['deadline'] <= 0 or params['request_timeout'] <= 0:
        module.fail_json(msg='zope_healthcheck: deadline and request_timeout must be positive.')
    auth = None
    if params['url_username'] or params['url_password']:
        auth = (params['url_username'] or '', params['url_password'] or '')
    started = time.monotonic()
    results = run_checks(checks, params['deadline'], params['request_timeout'],
                         headers={str(k): str(v) for k, v in params['headers'].items()},
                         auth=auth, validate_certs=params['validate_certs'],
                         follow_redirects=params['follow_redirects'])
    elapsed = round(time.monotonic() - started, 3)
    failed_urls = failure_summary(results)
    output = scrub.deep({'changed': False, 'results': results, 'failed_urls': failed_urls,
                         'elapsed': elapsed})
    if failed_urls:
        module.fail_json(msg=scrub.text(
            'zope_healthcheck: %d of %d URLs failed within the %ss deadline: %s. Check that '
            'those clients run (zeo_service), their logs, and the expected status, body or '
            'revision.' % (len(failed_urls), len(results), params['deadline'],
                           '; '.join(failed_urls))), **output)
    module.exit_json(**output)


if __name__ == '__main__':
    main()
