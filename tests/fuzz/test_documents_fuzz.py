"""Stateful fuzzing of documents: boundary data written, read back by id, by filter and page by page."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.struct_pb2 import Value
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from stord.v1 import documents_pb2 as pb
from stord.v1 import documents_pb2_grpc
from tests.conftest import DATABASE_BACKENDS, Daemons
from tests.fuzz._edges import FUZZ_SETTINGS, Caller, floats, int64s, mutated_token, structs, texts

IDS = st.one_of(st.sampled_from(["d1", "d2", "ключ", "%_"]), texts(256))
OPERATORS = st.sampled_from([value for value in pb.FilterOperator.values() if value])
FIELDS = st.sampled_from(["a", "b", "a.b", "ключ", "", "$x"])
VALUES = st.one_of(
    floats().map(lambda number: Value(number_value=number)),
    int64s().map(lambda number: Value(number_value=float(number))),
    texts(64).map(lambda text: Value(string_value=text)),
)


class DocumentMachine(RuleBasedStateMachine):
    target = ""

    def __init__(self) -> None:
        super().__init__()
        self.call = Caller(self.target)
        self.stub = documents_pb2_grpc.DocumentServiceStub(self.call.channel)
        self.documents: dict[str, pb.Document] = {}

    def teardown(self) -> None:
        self.call.close()

    @rule(document_id=IDS, data=structs())
    def create(self, document_id: str, data: Any) -> None:
        request = pb.CreateDocumentRequest(collection="c", document_id=document_id, data=data)
        answer = self.call(self.stub.CreateDocument, request)
        if isinstance(answer, pb.CreateDocumentResponse):
            self.documents[answer.document.id] = answer.document

    @rule(document_id=IDS, data=structs(), revision=st.one_of(st.none(), int64s()))
    def update(self, document_id: str, data: Any, revision: int | None) -> None:
        request = pb.UpdateDocumentRequest(
            collection="c", document_id=document_id, data=data, expected_revision=revision
        )
        answer = self.call(self.stub.UpdateDocument, request)
        if isinstance(answer, pb.UpdateDocumentResponse):
            self.documents[document_id] = answer.document

    @rule(first=IDS, second=IDS, data=structs(), delete=st.booleans(), index_field=FIELDS)
    def transact(self, first: str, second: str, data: Any, delete: bool, index_field: str) -> None:
        """Two writes, all or nothing: either both show or the documents are as they were."""
        operations = [
            pb.TransactOperation(
                create=pb.CreateDocumentRequest(collection="c", document_id=first, data=data)
            ),
            pb.TransactOperation(delete=pb.DeleteDocumentRequest(collection="c", document_id=second))
            if delete
            else pb.TransactOperation(
                update=pb.UpdateDocumentRequest(collection="c", document_id=second, data=data)
            ),
        ]
        answer = self.call(self.stub.Transact, pb.TransactRequest(operations=operations))
        if isinstance(answer, pb.TransactResponse):
            created, outcome = answer.results
            self.documents[created.document.id] = created.document
            if delete:
                self.documents.pop(second, None)
            else:
                self.documents[second] = outcome.document
        self.call(self.stub.CreateIndex, pb.CreateIndexRequest(collection="c", field=index_field))

    @invariant()
    def every_document_reads_back_as_written(self) -> None:
        for document_id, written in self.documents.items():
            got = self.call(
                self.stub.GetDocument, pb.GetDocumentRequest(collection="c", document_id=document_id)
            )
            assert isinstance(got, pb.GetDocumentResponse)
            assert got.found
            assert got.document == written

    @rule(
        field=FIELDS,
        operator=OPERATORS,
        value=VALUES,
        order=st.lists(st.builds(pb.DocumentOrder, field=FIELDS, descending=st.booleans()), max_size=2),
        offset=st.sampled_from([0, 0, 1, 2**31 - 1]),
        page_size=st.integers(1, 3),
        data=st.data(),
    )
    def list_pages(
        self,
        field: str,
        operator: Any,
        value: Value,
        order: Any,
        offset: int,
        page_size: int,
        data: st.DataObject,
    ) -> None:
        filters = [pb.DocumentFilter(field=field, operator=operator, value=value)]
        self.call(self.stub.CountDocuments, pb.CountDocumentsRequest(collection="c", filters=filters))
        for chosen in (filters, []):
            request = pb.ListDocumentsRequest(
                collection="c", filters=chosen, order_by=order, page_size=page_size, offset=offset
            )
            seen: list[str] = []
            for _ in range(100):
                answer = self.call(self.stub.ListDocuments, request)
                if not isinstance(answer, pb.ListDocumentsResponse):
                    break
                for document in answer.documents:
                    assert document == self.documents[document.id]
                    seen.append(document.id)
                if not answer.next_page_token:
                    if not chosen and not offset and len(seen) == len(set(seen)):
                        assert set(seen) == set(self.documents)
                    break
                token = answer.next_page_token
                self.call.refused_token(self.stub.ListDocuments, request, mutated_token(token, data), token)
                request.page_token, request.offset = token, 0


@pytest.mark.parametrize("backend", DATABASE_BACKENDS)
def test_document_fuzz(backend: str, daemons: Daemons) -> None:
    DocumentMachine.target = daemons.get(backend).target
    run_state_machine_as_test(DocumentMachine, settings=FUZZ_SETTINGS)
