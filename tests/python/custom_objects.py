"""The official Python client (`kubernetes` from PyPI) against the embedded API server: create,
list, watch, patch and patch status of LxdContainers through CustomObjectsApi, as a user's
script would. Run by tests/apiserver_python.rs with the server's kubeconfig as argument."""

import sys
import threading

from kubernetes import client, config, watch

GROUP, VERSION, PLURAL, NAMESPACE = "lxd-operator.dev", "v1alpha1", "lxdcontainers", "default"


def container(name, memory="256Mi"):
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LxdContainer",
        "metadata": {"name": name, "labels": {"app": "python"}},
        "spec": {
            "clusterRef": {"name": "local"},
            "image": {"alias": "busybox"},
            "resources": {"cpu": 1, "memory": memory},
        },
    }


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    api = client.CustomObjectsApi()

    # A watcher started before the writes sees them in order.
    seen = []
    started = threading.Event()

    def watch_events():
        stream = watch.Watch()
        started.set()
        for event in stream.stream(
            api.list_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL,
            label_selector="app=python", timeout_seconds=20,
        ):
            seen.append((event["type"], event["object"]["metadata"]["name"]))
            if len(seen) >= 4:
                stream.stop()

    watcher = threading.Thread(target=watch_events)
    watcher.start()
    started.wait()

    created = api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, container("py-1"))
    assert created["metadata"]["uid"], created
    assert created["spec"]["state"] == "Running", "the schema default is filled in"
    api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, container("py-2"))

    listed = api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, label_selector="app=python")
    assert sorted(item["metadata"]["name"] for item in listed["items"]) == ["py-1", "py-2"], listed
    assert listed["metadata"]["resourceVersion"], listed

    patched = api.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, "py-1", {"spec": {"resources": {"memory": "512Mi"}}}
    )
    assert patched["spec"]["resources"]["memory"] == "512Mi", patched
    assert patched["metadata"]["generation"] == 2, patched

    # The client labels a JSON patch list merge-patch too; the server takes it as a JSON patch.
    api.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, "py-2",
        [{"op": "replace", "path": "/spec/state", "value": "Stopped"}],
    )
    got = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "py-2")
    assert got["spec"]["state"] == "Stopped", got

    status = api.patch_namespaced_custom_object_status(
        GROUP, VERSION, NAMESPACE, PLURAL, "py-1", {"status": {"phase": "Running", "member": "node1"}}
    )
    assert status["status"]["member"] == "node1", status
    assert status["metadata"]["generation"] == 2, "a status write leaves generation alone"

    watcher.join(timeout=20)
    assert seen == [("ADDED", "py-1"), ("ADDED", "py-2"), ("MODIFIED", "py-1"), ("MODIFIED", "py-2")], seen

    api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "py-1")
    try:
        api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "py-1")
        raise AssertionError("py-1 still exists")
    except client.exceptions.ApiException as error:
        assert error.status == 404, error
    print("python client: create, list, watch, patch, patch status, delete: ok")


if __name__ == "__main__":
    main(sys.argv[1])
