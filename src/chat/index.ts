export { BUILTIN_CHAT_TEMPLATES, CHAT_TEMPLATE_CHOICES, ChatTemplateError, chatFormat, createChatFormat, type ChatFormat, type ChatMessage } from './template.js';
