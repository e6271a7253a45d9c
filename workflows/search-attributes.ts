import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

// Custom search attributes, so the Temporal UI and CLI can filter pgrunbook's workflows
// (e.g. `PgrunbookDatabase = "app" AND PgrunbookOperation = "backup"`). The worker registers
// them on start where the server allows it; README shows the command for other clusters.
export const DATABASE_ATTRIBUTE = defineSearchAttributeKey('PgrunbookDatabase', SearchAttributeType.KEYWORD);
export const OPERATION_ATTRIBUTE = defineSearchAttributeKey('PgrunbookOperation', SearchAttributeType.KEYWORD);
export const LABEL_ATTRIBUTE = defineSearchAttributeKey('PgrunbookLabel', SearchAttributeType.KEYWORD);

export const SEARCH_ATTRIBUTES = [DATABASE_ATTRIBUTE, OPERATION_ATTRIBUTE, LABEL_ATTRIBUTE] as const;
