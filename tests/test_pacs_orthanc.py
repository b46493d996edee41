"""A SEG written by spine-seg is accepted by a real PACS (Orthanc) and reads back intact.

Needs the Orthanc that .ci/run starts (SPINESEG_TEST_ORTHANC="url|user|password|dicom_port|aet").
"""
import os

import pydicom
import pytest


ORTHANC = os.environ.get("SPINESEG_TEST_ORTHANC")
pytestmark = pytest.mark.skipif(not ORTHANC, reason="no Orthanc test server (started by .ci/run)")


@pytest.fixture(scope="module")
def pacs():
    url, user, password, port, aet = ORTHANC.split("|")
    return {"url": url, "user": user, "password": password, "port": int(port), "aet": aet}


@pytest.fixture(scope="module")
def seg_file(phantom_seg):
    return phantom_seg


def _client(pacs, password=None):
    import requests
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_auth
    session = create_session_from_auth(requests.auth.HTTPBasicAuth(pacs["user"], password or pacs["password"]))
    return DICOMwebClient(url=pacs["url"] + "/dicom-web", session=session)


def test_stow_then_qido_and_wado_read_back(pacs, seg_file):
    ds = pydicom.dcmread(seg_file)
    client = _client(pacs)
    client.store_instances([ds])
    found = client.search_for_instances(search_filters={"SOPInstanceUID": ds.SOPInstanceUID})
    assert len(found) == 1
    back = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert back.SOPInstanceUID == ds.SOPInstanceUID and back.Modality == "SEG"
    assert back.PixelData == ds.PixelData and len(back.SegmentSequence) == len(ds.SegmentSequence)
    client.store_instances([ds])   # storing the same SEG twice is harmless: still one instance
    assert len(client.search_for_instances(search_filters={"SOPInstanceUID": ds.SOPInstanceUID})) == 1


def test_wrong_password_is_refused(pacs, seg_file):
    import requests
    with pytest.raises(requests.HTTPError) as exc:
        _client(pacs, password="wrong").store_instances([pydicom.dcmread(seg_file)])
    assert exc.value.response.status_code == 401


def test_c_store_to_the_dicom_port(pacs, seg_file):
    from pynetdicom import AE
    ds = pydicom.dcmread(seg_file)
    ae = AE(ae_title="SPINESEG")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", pacs["port"], ae_title=pacs["aet"])
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert status.Status == 0x0000
