"""The in-process cloud's API on a real loopback socket, for the real
``openstack`` and ``nova`` CLIs run as subprocesses.

Nova's functional tests reach the API through wsgi-intercept, which only
this process sees.  Here the same WSGI application Nova's OSAPIFixture
loads (api-paste.ini's ``osapi_compute``, its Keystone middleware stubbed
by the fixture) is served on 127.0.0.1 by ``wsgiref`` in a (green) thread.

Authentication is a test pipeline, not Keystone: the CLIs use keystoneauth's
``admin_token`` plugin (a token and an endpoint, no identity service), and a
middleware in front of Nova's pipeline accepts that one token and sends
Nova the headers its stubbed ``NovaKeystoneContext`` reads (an admin of the
fixture's project); any other token gets a 401 as keystonemiddleware would
answer.  Images come from Nova's GlanceFixture through a read-only stand-in
of Glance's ``GET /v2/images`` (the CLIs look an image up before a boot).
"""

import datetime
import json
import os
import signal
import subprocess
import threading
import uuid
from wsgiref import simple_server

import fixtures
import yaml

# keystoneauth's admin_token plugin sends the token in this header
_TOKEN_HEADER = 'HTTP_X_AUTH_TOKEN'
CLI_TIMEOUT = 120       # seconds for one CLI call; a call never hangs a test


class _QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, format, *args):
        pass            # Nova's request_log middleware already logs


def _json(start_response, status, body):
    data = json.dumps(body, default=_iso).encode()
    start_response(status, [('Content-Type', 'application/json'),
                            ('Content-Length', str(len(data)))])
    return [data]


_NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _unauthorized(start_response):
    # as keystonemiddleware answers a missing or unknown token
    return _json(start_response, '401 Unauthorized', {'error': {
        'code': 401, 'title': 'Unauthorized',
        'message': 'The request you have made requires authentication.'}})


def _iso(value):
    if isinstance(value, datetime.datetime):
        return value.strftime('%Y-%m-%dT%H:%M:%SZ')
    raise TypeError(repr(value))


class _ImageAPI:
    """Glance's image v2 reads over GlanceFixture's images (what the CLIs
    look up before a boot), under /image."""

    def __init__(self, glance, base_url):
        self.glance = glance
        self.base_url = base_url

    def _image(self, image):
        body = {k: image.get(k) for k in (
            'id', 'name', 'status', 'container_format', 'disk_format',
            'size', 'min_ram', 'min_disk', 'protected', 'visibility',
            'created_at', 'updated_at')}
        body['tags'] = list(image.get('tags', []))
        body.update(image.get('properties', {}))
        body['self'] = '/v2/images/%s' % image['id']
        return body

    def __call__(self, environ, start_response):
        path = environ['PATH_INFO'].rstrip('/')
        images = self.glance.images
        if environ['REQUEST_METHOD'] != 'GET':
            return _json(start_response, '405 Method Not Allowed', {})
        if path in ('', '/v2'):
            return _json(start_response, '200 OK', {'versions': [{
                'id': 'v2.16', 'status': 'CURRENT', 'links': [
                    {'rel': 'self', 'href': self.base_url + '/v2/'}]}]})
        if path == '/v2/images':
            query = dict(p.split('=', 1) for p in
                         environ.get('QUERY_STRING', '').split('&')
                         if '=' in p)
            found = [self._image(i) for i in images.values()
                     if query.get('name') in (None, i['name'])
                     and query.get('id') in (None, i['id'])]
            return _json(start_response, '200 OK', {'images': found})
        if path.startswith('/v2/images/'):
            image = images.get(path[len('/v2/images/'):])
            if image is not None:
                return _json(start_response, '200 OK', self._image(image))
        return _json(start_response, '404 Not Found',
                     {'message': 'no image at %s' % path})


class LoopbackCloud(fixtures.Fixture):
    """Serves the loaded Nova API on 127.0.0.1 and runs CLIs against it.

    ``project_id``: the project the token's admin user belongs to (the
    functional test's, so its own API clients see the same servers).
    """

    def __init__(self, glance, project_id):
        super().__init__()
        self.glance = glance
        self.project_id = project_id

    def _setUp(self):
        from nova.api import wsgi
        self._compute = wsgi.Loader().load_app('osapi_compute')
        self.token = uuid.uuid4().hex
        host, port = self._serve()
        self.url = 'http://%s:%d' % (host, port)
        self._images = _ImageAPI(self.glance, self.url + '/image')
        self.home = self.useFixture(fixtures.TempDir()).path
        self.clouds_yaml = os.path.join(self.home, 'clouds.yaml')
        with open(self.clouds_yaml, 'w') as f:
            yaml.safe_dump({'clouds': {'rtmig-test': {
                'auth_type': 'admin_token',
                'auth': {'token': self.token,
                         'endpoint': self.url + '/v2.1'},
                'compute_endpoint_override': self.url + '/v2.1',
                'image_endpoint_override': self.url + '/image',
                'identity_endpoint_override': self.url + '/identity/v3',
                'region_name': 'RegionOne'}}}, f)

    def _serve(self):
        """Starts the server; returns its (host, port)."""
        from nova import monkey_patch
        if monkey_patch.is_patched():
            # Nova's tests run under eventlet by default: a green server
            # (wsgiref's selector would block the one OS thread)
            import eventlet
            import eventlet.wsgi
            sock = eventlet.listen(('127.0.0.1', 0))
            server = eventlet.spawn(eventlet.wsgi.server, sock, self._app,
                                    log_output=False)
            self.addCleanup(sock.close)
            self.addCleanup(server.kill)
            return sock.getsockname()
        server = simple_server.make_server(
            '127.0.0.1', 0, self._app, handler_class=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever,
                                  kwargs={'poll_interval': 0.05},
                                  daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return server.server_address

    def _app(self, environ, start_response):
        path = environ.get('PATH_INFO', '')
        if path == '/identity' or path.startswith('/identity/'):
            environ['SCRIPT_NAME'] += '/identity'
            environ['PATH_INFO'] = path[len('/identity'):]
            return self._identity(environ, start_response)
        if path == '/image' or path.startswith('/image/'):
            environ['SCRIPT_NAME'] += '/image'
            environ['PATH_INFO'] = path[len('/image'):]
            if environ['PATH_INFO'].strip('/') and not self._authed(environ):
                return _unauthorized(start_response)
            return self._images(environ, start_response)
        # version documents need no token, as in Nova's api-paste.ini
        if path.rstrip('/') not in ('', '/v2', '/v2.1'):
            if not self._authed(environ):
                return _unauthorized(start_response)
            # what the stubbed NovaKeystoneContext reads (OSAPIFixture's)
            environ['HTTP_X_AUTH_USER'] = 'admin'
            environ['HTTP_X_AUTH_PROJECT_ID'] = self.project_id
            environ['HTTP_X_ROLES'] = 'reader,member,admin'
        return self._compute(environ, start_response)

    def _authed(self, environ):
        return environ.get(_TOKEN_HEADER) == self.token

    def _identity(self, environ, start_response):
        """The identity API's version document (openstackclient checks it
        before some commands) and a token request for the one token
        (novaclient exchanges its token for a scoped one even with an
        endpoint given); nothing else."""
        path = environ['PATH_INFO'].strip('/')
        if path in ('', 'v3'):
            return _json(start_response, '200 OK', {'version': {
                'id': 'v3.14', 'status': 'stable', 'links': [{
                    'rel': 'self', 'href': self.url + '/identity/v3/'}]}})
        if path == 'v3/auth/tokens' and environ['REQUEST_METHOD'] == 'POST':
            size = int(environ.get('CONTENT_LENGTH') or 0)
            try:
                auth = json.loads(environ['wsgi.input'].read(size))['auth']
                token = auth['identity']['token']['id']
            except (ValueError, KeyError, TypeError):
                token = None
            if token != self.token:
                return _unauthorized(start_response)
            domain = {'id': 'default', 'name': 'Default'}
            body = {'token': {
                'methods': ['token'], 'issued_at': _iso(_NOW),
                'expires_at': _iso(_NOW + datetime.timedelta(days=1)),
                'user': {'id': 'admin', 'name': 'admin', 'domain': domain},
                'project': {'id': self.project_id, 'name': self.project_id,
                            'domain': domain},
                'roles': [{'id': r, 'name': r}
                          for r in ('reader', 'member', 'admin')],
                'catalog': []}}
            data = json.dumps(body).encode()
            start_response('201 Created', [
                ('Content-Type', 'application/json'),
                ('Content-Length', str(len(data))),
                ('X-Subject-Token', self.token)])
            return [data]
        return _json(start_response, '501 Not Implemented', {
            'message': 'no identity service here: %s' % environ['PATH_INFO']})

    def env(self):
        """The environment for a CLI subprocess: the clouds.yaml cloud for
        openstackclient, the same settings as OS_* variables for novaclient
        (which reads no clouds.yaml)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith('OS_')}
        env.update(HOME=self.home, OS_CLIENT_CONFIG_FILE=self.clouds_yaml,
                   OS_CLOUD='rtmig-test')
        return env

    def run(self, argv, env=None, check=True):
        """Runs one CLI call; returns the CompletedProcess (text).  With
        ``check``, a non-zero exit fails with the call's output."""
        # a timer, not communicate(timeout=): a call that hangs is killed
        # and its output still shown (under eventlet too)
        proc = subprocess.Popen(argv, env=env or self.env(), text=True,
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        timer = threading.Timer(CLI_TIMEOUT, proc.kill)
        timer.start()
        try:
            out, err = proc.communicate()
        finally:
            timer.cancel()
        if proc.returncode == -signal.SIGKILL:
            raise AssertionError('%s did not end in %d s\nstdout:\n%s\n'
                                 'stderr:\n%s' % (' '.join(argv), CLI_TIMEOUT,
                                                  out, err))
        proc = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise AssertionError('%s exited %d\nstdout:\n%s\nstderr:\n%s' % (
                ' '.join(argv), proc.returncode, proc.stdout, proc.stderr))
        return proc

    def openstack(self, *args, check=True):
        return self.run(['openstack'] + list(args), check=check)

    def openstack_json(self, *args):
        return json.loads(self.openstack(*args, '-f', 'json').stdout)

    def nova_env(self):
        """The environment for novaclient: a token and an endpoint skip
        its authentication, but its shell still wants an auth URL and a
        project, and it exchanges the token at the identity API."""
        env = {k: v for k, v in self.env().items()
               if k not in ('OS_CLOUD', 'OS_CLIENT_CONFIG_FILE')}
        env.update(OS_AUTH_TYPE='admin_token', OS_TOKEN=self.token,
                   OS_ENDPOINT=self.url + '/v2.1',
                   OS_ENDPOINT_OVERRIDE=self.url + '/v2.1',
                   OS_AUTH_URL=self.url + '/identity/v3',
                   OS_PROJECT_ID=self.project_id)
        return env

    def nova(self, *args, check=True):
        return self.run(['nova'] + list(args), env=self.nova_env(),
                        check=check)
